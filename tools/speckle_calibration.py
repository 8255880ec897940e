"""The phantom speckle level at which a row scores a target PSNR (issue 12, item 1).

`medstream evaluate --speckle-levels 0.25,0.5,0.75,1.0` measures every ultrasound row at each
level (one metrics pass, no timing), then finds the level at which the traditional row
(classical-nlm -> classical-otsu) scores 30 dB PSNR, the literature's traditional figure:
linear interpolation between the two measured levels that bracket 30 dB, then the row is
measured at that level; while it misses 30 dB by more than the tolerance (0.25 dB), the new
point joins the curve and the interpolation is repeated (a secant search, at most 4 steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tools.eval_common import write_png

CALIBRATION_ROW = "classical-nlm -> classical-otsu"
TARGET_PSNR_DB = 30.0  # the literature's traditional row (issue 3 / issue 12)
TOLERANCE_DB = 0.25
MAX_STEPS = 4


def parse_levels(text: str) -> list[float]:
    """'0.25,0.5,1' -> [0.25, 0.5, 1.0]; each level in the phantom's range 0..3."""
    try:
        levels = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"speckle levels: expected e.g. '0.25,0.5,1.0', got {text!r}") from None
    if len(levels) < 2 or not all(0.0 < v <= 3.0 for v in levels):
        raise ValueError(f"speckle levels: at least two distinct levels in (0, 3], got {text!r}")
    return levels


def crossing_level(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """The level where the piecewise-linear curve through (level, psnr) points meets `target`.

    Points are sorted by level; the first bracketing pair (from the lowest level) is used.
    None when no two neighbouring points bracket the target (it lies outside the measured range).
    """
    pts = sorted(points)
    for (l0, p0), (l1, p1) in zip(pts, pts[1:], strict=False):
        if p0 == target:
            return l0
        if (p0 - target) * (p1 - target) < 0:
            return l0 + (target - p0) * (l1 - l0) / (p1 - p0)
    if pts and pts[-1][1] == target:
        return pts[-1][0]
    return None


def calibrate(
    points: Sequence[tuple[float, float]],
    measure: Callable[[float], float],
    target: float = TARGET_PSNR_DB,
    tolerance: float = TOLERANCE_DB,
    max_steps: int = MAX_STEPS,
) -> dict[str, object]:
    """Interpolate, measure at the estimate, refine until within `tolerance` dB.

    `points` are the swept (level, psnr); `measure(level)` gives the row's PSNR there. Returns
    the level, its measured PSNR, whether it is within tolerance, and every step taken; the
    level is None (with a reason) when the sweep does not bracket the target.
    """
    curve = list(points)
    steps: list[dict[str, float]] = []
    level = crossing_level(curve, target)
    if level is None:
        lo, hi = min(p for _, p in curve), max(p for _, p in curve)
        return {
            "level": None,
            "reason": f"{target} dB is outside the swept PSNR range {lo:.2f}-{hi:.2f} dB",
            "steps": steps,
        }
    psnr = measure(level)
    steps.append({"level": level, "psnr_db": psnr})
    while abs(psnr - target) > tolerance and len(steps) < max_steps:
        curve = [p for p in curve if p[0] != level] + [(level, psnr)]
        estimate = crossing_level(curve, target)
        if estimate is None:
            break
        level = estimate
        psnr = measure(level)
        steps.append({"level": level, "psnr_db": psnr})
    best = min(steps, key=lambda s: abs(s["psnr_db"] - target))
    return {
        "level": best["level"],
        "psnr_db": best["psnr_db"],
        "within_tolerance": abs(best["psnr_db"] - target) <= tolerance,
        "steps": steps,
    }


def psnr_curves(sweep: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """{denoiser: [(level, psnr)]} from the sweep's rows; rows that share a denoiser share a curve."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for entry in sweep:
        for r in entry["rows"]:
            if "psnr_db" not in r:
                continue
            name = "input (noisy)" if r["group"] == "input" else r["methods"].split(" ")[0]
            points = curves.setdefault(name, [])
            if all(level != entry["level"] for level, _ in points):
                points.append((entry["level"], r["psnr_db"]))
    return curves


def plot_psnr(sweep: list[dict], level: float | None, path: Path) -> str | None:
    """PSNR against speckle level per denoiser as a PNG; None, or why it was skipped."""

    def draw(ax: Any) -> None:
        for name, points in psnr_curves(sweep).items():
            xs = [x for x, _ in sorted(points)]
            ys = [y for _, y in sorted(points)]
            ax.plot(xs, ys, marker="o", label=name)
        for target, text in ((30.0, "traditional 30"), (36.0, "CNN 36"), (39.0, "hybrid 39")):
            ax.axhline(target, color="grey", lw=0.7, ls=":")
            ax.text(ax.get_xlim()[0], target, f" literature {text} dB", fontsize=7, va="bottom")
        if level is not None:
            ax.axvline(level, color="black", lw=0.8, ls="--")
            ax.text(level, ax.get_ylim()[0], f" calibrated {level:.3f}", fontsize=7, va="bottom")
        ax.set_xlabel("phantom speckle level (1.0 = default)")
        ax.set_ylabel("PSNR dB vs clean image")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    return write_png(path, (6.0, 3.6), draw)
