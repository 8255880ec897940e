"""Measure tool tracking: the endo-tools detector + ByteTrack over held-out endoscope sequences.

    python -m tools.eval_track                       # seeds 3000-3007, 150 frames each at 30 fps

Each sequence is the demo's endoscope (configs/endoscopy_tool_tracking.yaml: three instruments
of the four types, smoke, motion blur, the tissue flap) at another seed, every frame through the
real pipeline (`load_pipeline`, ONNX Runtime, one thread) and the infer stage's tracker. A true
tip is matched to the tracked box (id >= 0) that overlaps it most (IoU >= 0.3). Per true tool:
the frames it is visible, the frames it is matched (coverage), the distinct ids it got and the
id switches (consecutive matches with different ids); of the matched frames, those whose shown
class (the track's label vote) is the tool's type, and the label changes (consecutive matches
with one id and different shown classes). Prints one JSON report.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from engines import EngineSpec, load_pipeline
from stream.sources.endoscopy import EndoscopySpec, endoscopy_frame
from stream.tracking import TrackerSpec, TrackLabels, make_tracker
from tools.eval_common import parse_seeds
from tools.eval_detect import box_iou

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "endoscopy_tool_tracking.yaml"


def demo_settings() -> tuple[EndoscopySpec, EngineSpec, TrackerSpec]:
    """The source, engine and tracker sections of the demo config."""
    grab, infer, _render = yaml.safe_load(CONFIG.read_text())["stages"]
    source = {k: v for k, v in grab["source"].items() if k != "type"}
    engine = EngineSpec(**{**infer["engine"], "backend": "onnxruntime", "threads": 1})
    tracker = TrackerSpec(**{k: v for k, v in infer["tracker"].items() if k != "type"})
    return EndoscopySpec(**source), engine, tracker


def track_sequence(
    spec: EndoscopySpec, pipeline: object, tracker_spec: TrackerSpec, frames: int
) -> tuple[dict[int, dict[str, int]], list[float]]:
    """Per true tool {visible, matched, ids, switches, right_class, label_changes}; and the
    per-frame ms (model + tracker + label vote)."""
    tracker = make_tracker(tracker_spec)
    labels = TrackLabels(tracker_spec.label_window)
    tools: dict[int, dict[str, int]] = {}
    ids: dict[int, set[int]] = {}
    last: dict[int, int] = {}
    last_label: dict[int, int] = {}
    times = []
    for index in range(frames):
        frame = endoscopy_frame(spec, index)
        start = time.perf_counter()
        result = pipeline(frame.image, "bgr8")  # type: ignore[operator]
        track_ids = tracker.update(result.boxes, index / spec.fps)
        shown = labels.update(result.boxes, track_ids, index / spec.fps)
        times.append((time.perf_counter() - start) * 1e3)
        tracked = [(b, t) for b, t in zip(shown, track_ids, strict=True) if t >= 0]
        boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b, _ in tracked], np.float32).reshape(-1, 4)
        for x0, y0, x1, y1, kind, tool, *_ in frame.boxes:
            stats = tools.setdefault(
                int(tool),
                {
                    "visible": 0,
                    "matched": 0,
                    "ids": 0,
                    "switches": 0,
                    "right_class": 0,
                    "label_changes": 0,
                },
            )
            stats["visible"] += 1
            if not len(boxes):
                continue
            overlap = box_iou(np.array([[x0, y0, x1, y1]], np.float32), boxes)[0]
            best = int(np.argmax(overlap))
            if overlap[best] < 0.3:
                continue
            box, tid = tracked[best]
            stats["matched"] += 1
            stats["right_class"] += box.label == int(kind)
            ids.setdefault(int(tool), set()).add(tid)
            if int(tool) in last and last[int(tool)] != tid:
                stats["switches"] += 1
            elif int(tool) in last and last_label[int(tool)] != box.label:
                stats["label_changes"] += 1
            last[int(tool)], last_label[int(tool)] = tid, box.label
    for tool, stats in tools.items():
        stats["ids"] = len(ids.get(tool, set()))
    return tools, times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("3000-3007"))
    p.add_argument("--frames", type=int, default=150)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a tracker key (e.g. merge_iou=0.3) or conf_threshold of the demo config",
    )
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    source, engine, tracker = demo_settings()
    for item in args.set:
        key, _, value = item.partition("=")
        if key == "conf_threshold":
            engine = replace(engine, conf_threshold=float(value))
        else:
            tracker = replace(tracker, **{key: type(getattr(tracker, key))(value)})
    pipeline = load_pipeline(engine)
    per_tool: list[dict[str, int]] = []
    times: list[float] = []
    for seed in args.seeds:
        tools, ms = track_sequence(replace(source, seed=seed), pipeline, tracker, args.frames)
        per_tool.extend(tools.values())
        times.extend(ms)
    seen = [t for t in per_tool if t["matched"] > 0]
    report = {
        "tracker": dict(vars(tracker)),
        "conf_threshold": engine.conf_threshold,
        "data": f"endoscope of configs/endoscopy_tool_tracking.yaml at seeds "
        f"{args.seeds[0]}-{args.seeds[-1]}, {args.frames} frames each (30 fps)",
        "tools": len(per_tool),
        "tools_tracked": len(seen),
        "tools_with_one_id": sum(t["ids"] == 1 for t in seen),
        "share_with_one_id": round(sum(t["ids"] == 1 for t in seen) / max(len(seen), 1), 3),
        "id_switches": sum(t["switches"] for t in per_tool),
        "coverage": round(
            sum(t["matched"] for t in per_tool) / max(sum(t["visible"] for t in per_tool), 1), 3
        ),
        "coverage_definition": "matched / visible true-tip frames over all tools",
        "class_accuracy": round(
            sum(t["right_class"] for t in per_tool) / max(sum(t["matched"] for t in per_tool), 1), 3
        ),
        "label_changes": sum(t["label_changes"] for t in per_tool),
        "label_definition": "class_accuracy: matched frames whose shown class is the tool's type; "
        "label_changes: consecutive matches of a tool with one id and different shown classes",
        "model_plus_tracker_ms": {
            "median": round(float(np.median(times)), 2),
            "p99": round(float(np.percentile(times, 99)), 2),
            "max": round(float(np.max(times)), 2),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
