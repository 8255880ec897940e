"""Benchmark the render stage's drawing: mask + boxes + labels + HUD on live-sized frames.

    python -m tools.bench_render [--frames 300] [--json out.json]

Prints median / p99 / max per step in milliseconds, against a floor measured in the same run
(one plain copy of the frame, the least any non-destructive renderer must do). The imaging-region
rows: `roi.detect` is the grab stage's automatic detector per frame (its p99 is a detection
frame), `mask.draw via overlay policy` the mask drawn through the overlay policy (region mask,
colour check on colour frames, clip and the outside-pixel check) to compare with `mask.draw`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import cv2
import numpy as np

from stream.frame import Box, Frame
from stream.render import (
    BoxAnnotator,
    HudAnnotator,
    HudData,
    LabelAnnotator,
    MaskAnnotator,
    to_bgr,
)
from stream.render.confidence import ConfidenceAnnotator
from stream.render.legend import LegendAnnotator, NoticeAnnotator
from stream.render.overlay_policy import ClippedOverlay, OverlayPolicy
from stream.roi.detect import RegionDetector
from stream.roi.region import Region, rect_polygon
from tools.bench.timing import time_calls_ms

LABELS = ["background", "shaft", "jaw", "needle"]


def _masks(h: int, w: int, n: int) -> list[np.ndarray]:
    """`n` label maps with an instrument-like wedge and a blob, moving from frame to frame."""
    masks = []
    for i in range(n):
        m = np.zeros((h, w), np.uint8)
        dx = i * w // (8 * n)
        shaft = np.array(
            [
                (w // 10 + dx, h),
                (w // 2 + dx, h // 2),
                (w // 2 + dx + w // 20, h // 2 + h // 20),
                (w // 5 + dx, h),
            ],
            np.int32,
        )
        cv2.fillPoly(m, [shaft], 1)
        cv2.ellipse(m, (w // 2 + dx, h // 2), (w // 16, h // 12), 30, 0, 360, 2, -1)
        cv2.circle(m, (3 * w // 4, h // 3 + dx // 4), h // 10, 3, -1)
        masks.append(m)
    return masks


def _boxes(h: int, w: int) -> list[Box]:
    return [
        Box(w * 0.1, h * 0.5, w * 0.55, h * 0.99, 1, 0.97),
        Box(w * 0.44, h * 0.4, w * 0.58, h * 0.6, 2, 0.88),
        Box(w * 0.65, h * 0.2, w * 0.85, h * 0.45, 3, 0.71),
        Box(w * 0.3, h * 0.05, w * 0.4, h * 0.2, 3, 0.42),
    ]


def bench_scene(name: str, h: int, w: int, fmt: str, frames: int) -> list[dict]:
    """Time each drawing step and the whole render for one frame size and pixel format."""
    rng = np.random.default_rng(0)
    shape = (h, w) if fmt == "gray8" else (h, w, 3)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    image.flags.writeable = False  # as received from ZeroMQ
    masks = _masks(h, w, 16)
    boxes = _boxes(h, w)
    mask_a, box_a, label_a, hud_a = (
        MaskAnnotator(),
        BoxAnnotator(),
        LabelAnnotator(),
        HudAnnotator(),
    )
    canvas = to_bgr(image, fmt)
    heat_a, legend_a, notice_a = ConfidenceAnnotator(), LegendAnnotator(), NoticeAnnotator()
    confidence = [cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (9, 9), 0)]

    def hud(i: int) -> HudData:
        return HudData(
            seq=i,
            fps=59.9,
            latency_p50_ms=14.2,
            latency_p99_ms=21.7,
            budget_ms=33.0,
            budget_misses=2,
            drops=5,
            model="instruments-unet",
            backend="onnxruntime",
            overlay_stale_ms=None if i % 2 else 85.0,
        )

    def render_draw(i: int) -> np.ndarray:
        out = to_bgr(image, fmt)
        mask_a.draw(out, masks[i % len(masks)])
        box_a.draw(out, boxes)
        label_a.draw(out, boxes, LABELS)
        hud_a.draw(out, hud(i))
        return out

    def render_annotate(i: int) -> np.ndarray:
        out = mask_a.annotate(to_bgr(image, fmt), masks[i % len(masks)])
        out = box_a.annotate(out, boxes)
        out = label_a.annotate(out, boxes, LABELS)
        return hud_a.annotate(out, hud(i))

    moving = [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(4)]
    detector = RegionDetector()
    roi = Region("config", rect_polygon(w * 0.1, h * 0.1, w * 0.9, h * 0.9))
    framed = Frame("bench", 0, 0, 0, image, fmt, meta={"roi": roi.meta()})
    policy, clipped = OverlayPolicy(), ClippedOverlay()

    def policy_draw(i: int) -> None:
        d = policy.decide(canvas, framed, framed, fmt == "gray8")
        mask = masks[i % len(masks)]
        clipped.draw(
            canvas, d.allowed, lambda c: mask_a.draw(c, clipped.clip_labels(mask, d.allowed))
        )

    steps: list[tuple[str, Callable[[int], object]]] = [
        ("floor: copy", lambda i: image.copy()),
        (f"to_bgr {fmt}", lambda i: to_bgr(image, fmt)),
        ("mask.draw", lambda i: mask_a.draw(canvas, masks[i % len(masks)])),
        ("roi.detect (auto, per frame)", lambda i: detector.update(moving[i % len(moving)])),
        ("mask.draw via overlay policy", policy_draw),
        ("box.draw x4", lambda i: box_a.draw(canvas, boxes)),
        ("label.draw x4", lambda i: label_a.draw(canvas, boxes, LABELS)),
        ("hud.draw", lambda i: hud_a.draw(canvas, hud(i))),
        ("confidence.draw", lambda i: heat_a.draw(canvas, confidence[0])),
        ("legend.draw", lambda i: legend_a.draw(canvas, LABELS, heat_a.colors)),
        ("notice.draw", lambda i: notice_a.draw(canvas, "Research use only, not for diagnosis")),
        ("render (draw chain)", render_draw),
        ("render (annotate chain)", render_annotate),
    ]
    x, y, bw, bh = cv2.boundingRect(masks[0])
    print(
        f"{name}: mask labels {int(masks[0].max())}, {np.count_nonzero(masks[0]) / (h * w):.0%} "
        f"of pixels labelled, bounding box {bw * bh / (h * w):.0%} of the frame; "
        f"{len(boxes)} boxes; HUD with the stale banner every other frame"
    )
    rows = []
    for step, fn in steps:
        t = time_calls_ms(fn, frames, warmup=10)
        rows.append(
            {
                "scene": name,
                "step": step,
                "frames": frames,
                "median_ms": float(np.median(t)),
                "p99_ms": float(np.percentile(t, 99)),
                "max_ms": float(t.max()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="timed frames per step")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.frames < 10:
        parser.error("--frames must be >= 10")
    rows = bench_scene("1080p bgr8", 1080, 1920, "bgr8", args.frames)
    rows += bench_scene("640x480 gray8", 480, 640, "gray8", args.frames)
    print(f"{'scene':<15} {'step':<24} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for r in rows:
        print(
            f"{r['scene']:<15} {r['step']:<24} {r['median_ms']:>10.3f} {r['p99_ms']:>8.3f} "
            f"{r['max_ms']:>8.3f}"
        )
    print(f"({args.frames} frames per step; cv2 threads: {cv2.getNumThreads()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frames": args.frames, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
