"""Benchmark the detection host steps: letterbox and postprocess (decode, threshold, NMS,
un-letterbox) on a YOLOv8-sized output, against a floor measured in the same run.

    python -m tools.bench_detection [--calls 200] [--classes 80] [--above 300] [--json out.json]

The output is 1 x (4+C) x 8400 (a 640 px YOLOv8 head) of seeded random boxes with class scores
below 0.2, except `--above` candidates scored 0.3..1 (so they pass the default 0.25 threshold
and go through NMS). The frame is 1920 x 1080 BGR. Floor: one copy of the output array (what
any postprocess at least reads). Prints median / p99 / max in milliseconds.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from engines.detection import DetectionDecoder, DetectionSettings, detect
from engines.letterbox import letterbox
from tools.bench.timing import time_calls_ms

INPUT = 640
ANCHORS = 8400


def yolo8_output(classes: int, above: int, seed: int = 0) -> np.ndarray:
    """1 x (4+C) x 8400: random boxes; `above` candidates scored over the default threshold."""
    rng = np.random.default_rng(seed)
    out = np.empty((1, 4 + classes, ANCHORS), np.float32)
    out[0, :2] = rng.uniform(0, INPUT, (2, ANCHORS))
    out[0, 2:4] = rng.uniform(10, 100, (2, ANCHORS))
    out[0, 4:] = rng.uniform(0, 0.2, (classes, ANCHORS))
    rows = rng.choice(ANCHORS, above, replace=False)
    out[0, 4 + rng.integers(0, classes, above), rows] = rng.uniform(0.3, 1.0, above)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--above", type=int, default=300, help="candidates above the threshold")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.classes < 1 or not 0 <= args.above <= ANCHORS:
        ap.error(f"--calls and --classes must be >= 1 and --above in 0..{ANCHORS}")
    out = yolo8_output(args.classes, args.above)
    frame = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), np.uint8)
    _, placement = letterbox(frame, INPUT, INPUT)
    decoder = DetectionDecoder.from_card(
        {"layout": "yolo_4+C_N", "outputs": {"output": "o"}}, args.classes, INPUT, INPUT, "bench"
    )
    settings = DetectionSettings()
    boxes, cut = detect({"o": out}, decoder, settings, placement)
    kept = len(boxes)
    steps = {
        "floor: copy of the output": lambda _: out.copy(),
        "letterbox 1920x1080 -> 640": lambda _: letterbox(frame, INPUT, INPUT),
        "postprocess (decode, NMS, boxes)": lambda _: detect({"o": out}, decoder, settings, placement),
    }
    figures = {}
    print(f"{'step':<36}{'median':>9}{'p99':>9}{'max':>9}  ms, {args.calls} calls; {kept} boxes kept, {cut} cut by max_boxes")
    for name, fn in steps.items():
        ms = time_calls_ms(fn, args.calls, warmup=5)
        row = {"median": float(np.median(ms)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}
        figures[name] = row
        print(f"{name:<36}{row['median']:>9.3f}{row['p99']:>9.3f}{row['max']:>9.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "boxes_kept": kept, "boxes_cut": cut, "ms": figures}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
