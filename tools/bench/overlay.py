"""`medstream bench` part `overlay`: what the imaging region and the overlay policy cost per
frame, next to the floor (one copy of the frame) and the plain mask drawing they wrap.

Frames: the demo's phantom at 512x512 (gray8), and the same frames as rgb8 with a colour-flow
patch (the colour check then runs in full). Rows: `roi.detect` (the grab stage's automatic
detector, per frame: its p99 is a detection frame), `policy.decide` (region mask from the cache,
colour check), `mask.draw` (the plain annotator) and `mask.draw via policy` (decide, clip, draw,
restore and count the pixels outside); on the grey scene also the applicability gate and the
confidence pieces of issue 10: `gate.assess` (us-seg's gate, in the infer stage),
`labels + confidence` (the infer stage's postprocess from us-seg's 4 x 256 x 256 logits, against
`labels only`, what it replaces), `heat-map via policy` (render, `overlay: confidence`) and
`legend + notice` (render).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from engines.applicability import Gate
from engines.postprocess import labels_from_logits, labels_with_confidence
from engines.registry import resolve_model
from stream.frame import Frame
from stream.render.confidence import ConfidenceAnnotator
from stream.render.legend import LegendAnnotator, NoticeAnnotator
from stream.render.mask import MaskAnnotator
from stream.render.overlay_policy import ClippedOverlay, OverlayPolicy
from stream.roi.detect import RegionDetector
from stream.roi.region import Region
from stream.sources.phantom import PhantomSource, PhantomSpec
from tools.bench.timing import table_head, time_calls_ms


def bench_overlay(frames: int = 300) -> list[dict[str, Any]]:
    """Rows {scene, step, frames, median_ms, mean_ms, p99_ms}."""
    source = PhantomSource(PhantomSpec(width=512, height=512, truth=True))
    caps = [c for c in (source.read() for _ in range(32)) if c is not None]
    greys = [c.image for c in caps]
    masks = [c.parts["truth"] for c in caps]
    warm = RegionDetector()
    region = None
    for g in greys:
        region = warm.update(g)
    if region is None:
        raise RuntimeError("bench overlay: the detector found no region on the phantom")
    rows: list[dict[str, Any]] = []
    for scene, fmt in (
        ("ultrasound 512x512 gray8", "gray8"),
        ("ultrasound 512x512 rgb8 + flow", "rgb8"),
    ):
        images = greys
        if fmt == "rgb8":
            images = [np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2)) for g in greys]
            for im in images:
                im[200:260, 220:300] = (200, 30, 30)  # a colour-flow patch inside the sector
        rows += _scene_rows(scene, fmt, images, masks, region, frames)
    return rows


def _scene_rows(
    scene: str, fmt: str, images: list[np.ndarray], masks: list[np.ndarray], region: Region,
    frames: int,
) -> list[dict[str, Any]]:
    grey = fmt == "gray8"
    bgr = [cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) if grey else im for im in images]
    framed = [
        Frame("bench", i, 0, 0, im, fmt, meta={"roi": region.meta()}) for i, im in enumerate(images)
    ]
    detector, policy = RegionDetector(), OverlayPolicy()
    clip, annotator = ClippedOverlay(), MaskAnnotator()
    n = len(images)

    def draw_plain(i: int) -> None:
        annotator.draw(bgr[i % n].copy(), masks[i % n])

    def decide(i: int) -> None:
        policy.decide(bgr[i % n], framed[i % n], framed[i % n], grey)

    def draw_policy(i: int) -> None:
        canvas = bgr[i % n].copy()
        d = policy.decide(canvas, framed[i % n], framed[i % n], grey)
        labels = clip.clip_labels(masks[i % n], d.allowed)
        clip.draw(canvas, d.allowed, lambda c: annotator.draw(c, labels))

    steps: list[tuple[str, Callable[[int], object]]] = [
        ("floor: copy", lambda i: bgr[i % n].copy()),
        ("roi.detect (per frame)", lambda i: detector.update(images[i % n])),
        ("policy.decide", decide),
        ("mask.draw", draw_plain),
        ("mask.draw via policy", draw_policy),
    ]
    if grey:
        steps += _explain_steps(images, bgr, framed, policy, clip)
    rows = []
    for step, fn in steps:
        t = time_calls_ms(fn, frames)
        rows.append({"scene": scene, "step": step, "frames": frames,
                     "median_ms": round(float(np.median(t)), 3),
                     "mean_ms": round(float(t.mean()), 3),
                     "p99_ms": round(float(np.percentile(t, 99)), 3)})
    return rows


def _explain_steps(
    images: list[np.ndarray],
    bgr: list[np.ndarray],
    framed: list[Frame],
    policy: OverlayPolicy,
    clip: ClippedOverlay,
) -> list[tuple[str, Callable[[int], object]]]:
    """The gate, the confidence map, the heat-map and the legend + notice (issue 10's pieces)."""
    card = resolve_model("us-seg").card
    gate = Gate.from_card(card.raw["applicability"], "us-seg")
    threshold = float(card.raw.get("confidence_threshold", 0.5))
    shape = (1, len(card.labels), 256, 256)
    logits = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    size = images[0].shape[:2]
    confidence = labels_with_confidence(logits, size, threshold)[1]
    heat, legend, notice = ConfidenceAnnotator(), LegendAnnotator(), NoticeAnnotator()
    n = len(images)

    def heat_map(i: int) -> None:
        canvas = bgr[i % n].copy()
        d = policy.decide(canvas, framed[i % n], framed[i % n], True)
        clip.draw(canvas, d.allowed, lambda c: heat.draw(c, confidence, d.allowed))

    def panels(i: int) -> None:
        canvas = bgr[i % n].copy()
        legend.draw(canvas, card.labels)
        notice.draw(canvas, "Research use only, not for diagnosis")

    return [
        ("gate.assess", lambda i: gate.assess(images[i % n], "gray8")),
        ("labels only (postprocess)", lambda i: labels_from_logits(logits, size)),
        ("labels + confidence", lambda i: labels_with_confidence(logits, size, threshold)),
        ("heat-map via policy", heat_map),
        ("legend + notice (with copy)", panels),
    ]


def overlay_markdown(rows: list[dict[str, Any]] | None) -> list[str]:
    """The markdown section for `bench.md` (nothing without rows)."""
    if not rows:
        return []
    lines = table_head(
        "Imaging region, overlay policy, applicability gate and confidence, per frame (ms); the "
        "copy is the floor, `mask.draw` what the policy wraps; the detector samples every 2nd "
        "frame and detects every 8th: its mean is its cost",
        ["scene", "step", "median", "mean", "p99"],
    )
    for r in rows:
        lines.append(
            f"| {r['scene']} | {r['step']} | {r['median_ms']:.3f} | {r['mean_ms']:.3f} "
            f"| {r['p99_ms']:.3f} |"
        )
    return lines
