"""Score the endo-tools detector on held-out synthetic endoscopy frames: AP at IoU 0.5.

    python -m tools.eval_detect                        # the bundled endo-tools, print the report
    python -m tools.eval_detect --write-card           # also its card's metrics and cost

Frames come from `stream.sources.endoscopy` with the tool-tracking realism (instrument types,
smoke, motion blur, occlusion) drawn per seed by `scene_spec`; the truth is the source's
`truth_boxes`. Boxes come from the real pipeline (`load_pipeline`: letterbox, ONNX Runtime on one
thread, the detection postprocess with scores >= 0.05 and class-aware NMS at IoU 0.5); boxes
beyond its `max_boxes` (100) are never scored, so the report counts them (`boxes_cut`) and warns
if there are any. Latency is measured as for every card (tools.eval_common.measure_latency).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from stream.sources.endoscopy import TOOL_LABELS, EndoscopySpec, endoscopy_frame
from tools.eval_common import parse_seeds

# (image 640x480 BGR, truth boxes [x0, y0, x1, y1, type] in frame pixels)
ToolFrame = tuple[np.ndarray, np.ndarray]
Detections = np.ndarray  # K x 6: x0, y0, x1, y1, label, score in frame pixels
Detector = Callable[[np.ndarray], tuple[Detections, int]]  # image -> (boxes, boxes max_boxes cut)


def scene_spec(seed: int) -> EndoscopySpec:
    """The endoscope for `seed`: tool types always, smoke / blur / occlusion / motion / noise
    drawn from the seed, so training and held-out seeds share one distribution."""
    r = np.random.default_rng([seed, 99])
    return EndoscopySpec(
        seed=seed,
        tool_types=True,
        smoke=float(r.uniform(0.0, 0.6)) if r.random() < 0.6 else 0.0,
        blur=float(r.uniform(0.0, 2.0)) if r.random() < 0.6 else 0.0,
        occlusion=float(r.uniform(0.1, 0.5)) if r.random() < 0.5 else 0.0,
        motion=float(r.uniform(0.5, 2.0)),
        noise=float(r.uniform(1.0, 6.0)),
        truth=False,
        truth_boxes=True,
    )


def tool_frames(seeds: Iterable[int], frames_per_seed: int) -> Iterator[ToolFrame]:
    """`frames_per_seed` frames of each seed's scene at indices drawn from the seed."""
    for seed in seeds:
        spec = scene_spec(seed)
        for index in np.random.default_rng([seed, 98]).integers(0, 6000, frames_per_seed):
            f = endoscopy_frame(spec, int(index))
            boxes = np.array([b[:5] for b in f.boxes], np.float32).reshape(-1, 5)
            yield f.image, boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of K x 4 and M x 4 boxes (x0, y0, x1, y1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), 2)
    area = lambda x: np.prod(x[:, 2:4] - x[:, :2], 1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def average_precision(
    detections: list[Detections], truths: list[np.ndarray], classes: int, iou: float = 0.5
) -> dict[str, object]:
    """Per-class AP (all-point interpolated) at `iou`, their mean, and the pooled precision /
    recall of the detections given (already thresholded by the caller)."""
    ap: dict[str, float | None] = {}
    tp_all = fp_all = 0
    n_all = sum(len(t) for t in truths)
    for k in range(classes):
        scored: list[tuple[float, bool]] = []
        n_truth = 0
        for det, truth in zip(detections, truths, strict=True):
            t = truth[truth[:, 4] == k]
            d = det[det[:, 4] == k]
            d = d[np.argsort(-d[:, 5])]
            n_truth += len(t)
            used = np.zeros(len(t), bool)
            overlaps = box_iou(d[:, :4], t[:, :4]) if len(t) else np.zeros((len(d), 0))
            for i in range(len(d)):
                j = int(np.argmax(np.where(used, -1, overlaps[i]))) if len(t) else -1
                hit = j >= 0 and overlaps[i, j] >= iou and not used[j]
                if hit:
                    used[j] = True
                scored.append((float(d[i, 5]), hit))
        if n_truth == 0:
            ap[TOOL_LABELS[k]] = None
            continue
        scored.sort(key=lambda s: -s[0])
        hits = np.array([s[1] for s in scored], bool)
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        tp_all, fp_all = tp_all + int(hits.sum()), fp_all + int((~hits).sum())
        recall = tp / n_truth
        precision = tp / np.maximum(tp + fp, 1)
        r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
        p = np.concatenate([[1.0], precision, [0.0]])
        p = np.maximum.accumulate(p[::-1])[::-1]
        ap[TOOL_LABELS[k]] = float(np.sum((r[1:] - r[:-1]) * p[1:]))
    values = [v for v in ap.values() if v is not None]
    return {
        "ap50": ap,
        "map50": float(np.mean(values)) if values else None,
        "precision": tp_all / max(tp_all + fp_all, 1),
        "recall": tp_all / max(n_all, 1),
        "truth_boxes": n_all,
    }


def evaluate_detector(
    detect: Detector, frames: Iterable[ToolFrame], threshold: float
) -> dict[str, object]:
    """mAP@0.5 over all detections (scores >= 0.05), precision / recall at `threshold`, and
    how many boxes the pipeline's `max_boxes` cut (found, but never scored: 0 or the AP is low)."""
    dets, truths, cut = [], [], 0
    for image, truth in frames:
        boxes, boxes_cut = detect(image)
        dets.append(boxes)
        truths.append(truth)
        cut += boxes_cut
    report = average_precision(dets, truths, len(TOOL_LABELS))
    at = average_precision([d[d[:, 5] >= threshold] for d in dets], truths, len(TOOL_LABELS))
    report["precision"], report["recall"] = at["precision"], at["recall"]
    report["operating_threshold"] = threshold
    report["frames"] = len(truths)
    report["boxes_cut"] = cut
    if cut:
        print(
            f"warning: max_boxes cut {cut} boxes over {len(truths)} frames: raise it to score them",
            file=sys.stderr,  # stdout carries the JSON report
        )
    return report


def pipeline_detector(model: str, max_boxes: int = 100) -> tuple[Detector, object]:
    """detect(image) through `load_pipeline(model)` (ONNX Runtime, one thread, scores >= 0.05,
    NMS IoU 0.5, at most `max_boxes` a frame), and the pipeline (for timing and closing)."""
    from engines import EngineSpec, load_pipeline

    cv2.setNumThreads(1)
    spec = EngineSpec(
        model=model,
        backend="onnxruntime",
        threads=1,
        conf_threshold=0.05,
        iou_threshold=0.5,
        max_boxes=max_boxes,
    )
    pipeline = load_pipeline(spec)

    def detect(image: np.ndarray) -> tuple[Detections, int]:
        result = pipeline(image, "bgr8")
        rows = [[b.x0, b.y0, b.x1, b.y1, b.label, b.score] for b in result.boxes]
        return np.array(rows, np.float32).reshape(-1, 6), result.boxes_cut

    return detect, pipeline


def score_card(folder: Path, test_seeds: list[int], frames_per_seed: int, runs: int) -> dict:
    """Evaluate `folder`'s model (model.onnx + card.json) and write the card's `metrics` and
    `cost`; returns the metrics."""
    from tools.eval_common import measure_latency
    from tools.train_common import cost_card, rounded, seed_text, write_card

    card_path = folder / "card.json"
    card = json.loads(card_path.read_text())
    onnx_path = folder / "model.onnx"
    detect, pipeline = pipeline_detector(str(onnx_path))
    threshold = float(card["confidence_threshold"])
    metrics = evaluate_detector(detect, tool_frames(test_seeds, frames_per_seed), threshold)
    image = endoscopy_frame(scene_spec(test_seeds[0]), 0).image
    latency = measure_latency(pipeline, image, runs, min(10, runs), "bgr8")  # type: ignore[arg-type]
    card["metrics"] = {
        "data": f"held-out endoscopy seeds {seed_text(test_seeds)} (tools/eval_detect.scene_spec), "
        f"{frames_per_seed} frames each, 640x480, through the ONNX pipeline",
        "ap_definition": "per-class average precision at IoU 0.5 (all-point interpolation) of "
        "the pipeline's boxes with score >= 0.05 after class-aware NMS (IoU 0.5); precision and "
        f"recall of the boxes at the confidence threshold {threshold}",
        **rounded(metrics),
    }
    card["cost"] = cost_card(onnx_path, "320x240", "640x480 bgr8", latency, "tools.eval_detect")
    card["cost"]["measure_command"] = f"python -m tools.eval_detect --model {folder} --write-card"
    write_card(card_path, card)
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("engines/models/endo-tools"), help="folder")
    p.add_argument("--test-seeds", type=parse_seeds, default=parse_seeds("2000-2031"))
    p.add_argument("--frames-per-seed", type=int, default=4)
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--write-card", action="store_true", help="write metrics and cost to the card")
    args = p.parse_args(argv)
    if args.write_card:
        report = score_card(args.model, args.test_seeds, args.frames_per_seed, args.latency_runs)
    else:
        card = json.loads((args.model / "card.json").read_text())
        detect, _ = pipeline_detector(str(args.model / "model.onnx"))
        frames = tool_frames(args.test_seeds, args.frames_per_seed)
        report = evaluate_detector(detect, frames, card["confidence_threshold"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
