"""`medstream bench` part `sources`: what the synthetic sources cost per frame, next to the floor
(one copy of a frame of the same size) and their targets.

The phantom (512x512 grey, the demo's source) and the endoscopy scene (640x480 BGR) must stay
well inside a live frame interval; these were wall-clock asserts in the unit tests, which only
keep generous sanity bounds now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stream.sources.endoscopy import EndoscopySpec, endoscopy_frame
from stream.sources.phantom import PhantomSpec, phantom_frame
from tools.bench.timing import table_head, time_calls_ms

# scene -> per-frame target (ms): the phantom's own goal, and one 60 fps interval for endoscopy
TARGET_MS = {"phantom 512x512 gray8": 5.0, "endoscopy 640x480 bgr8": 1000 / 60}


def _copier(image: np.ndarray) -> Callable[[int], np.ndarray]:
    return lambda _i: image.copy()


def _row(scene: str, step: str, t: np.ndarray) -> dict[str, Any]:
    return {
        "scene": scene,
        "step": step,
        "frames": len(t),
        "median_ms": round(float(np.median(t)), 3),
        "p99_ms": round(float(np.percentile(t, 99)), 3),
        "target_ms": round(TARGET_MS[scene], 2) if step == "frame" else None,
    }


def bench_sources(frames: int = 60) -> list[dict[str, Any]]:
    """Rows {scene, step ("floor: copy" | "frame"), frames, median_ms, p99_ms, target_ms}."""
    phantom = PhantomSpec(width=512, height=512, seed=8)
    endo = EndoscopySpec(seed=0)
    scenes: list[tuple[str, Callable[[int], np.ndarray]]] = [
        ("phantom 512x512 gray8", lambda i: phantom_frame(phantom, i).image),
        ("endoscopy 640x480 bgr8", lambda i: endoscopy_frame(endo, i).image),
    ]
    rows: list[dict[str, Any]] = []
    for scene, make in scenes:
        first = make(0)  # builds the per-seed tables, which a live source does once
        rows.append(_row(scene, "floor: copy", time_calls_ms(_copier(first), frames, first=1)))
        rows.append(_row(scene, "frame", time_calls_ms(make, frames, first=1)))
    return rows


def sources_markdown(rows: list[dict[str, Any]] | None) -> list[str]:
    """The markdown section for `bench.md` (nothing without rows)."""
    if not rows:
        return []
    lines = table_head(
        "Synthetic sources, per frame (ms); the copy of one frame is the floor",
        ["scene", "step", "median", "p99", "target"],
    )
    for r in rows:
        target = "" if r["target_ms"] is None else f"<= {r['target_ms']:g}"
        lines.append(
            f"| {r['scene']} | {r['step']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | {target} |"
        )
    return lines

