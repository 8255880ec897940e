"""The run report's `overlay` section: what the render stages drew, and what they withheld.

From the render stages' counters (stream.stages.render): `frames_shown` (model output drawn),
`frames_suppressed` by reason (`ood`, `no_roi`, `bad_roi`, `stale`), `pixels_outside_roi` (pixels
changed outside the allowed mask after drawing: 0 by construction, counted to prove it) and
`pixels_clipped` (pixels the annotators drew outside it, restored before the frame went out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

PREFIX = "overlay_suppressed:"


def overlay_summary(counters: Iterable[Counter[str]]) -> dict[str, Any]:
    """The report section, summed over the render stages' counters."""
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return {
        "frames_shown": total["overlay_shown"],
        "frames_suppressed": {
            name[len(PREFIX) :]: n
            for name, n in sorted(total.items())
            if name.startswith(PREFIX) and n
        },
        "pixels_outside_roi": total["overlay_pixels_outside_roi"],
        "pixels_clipped": total["overlay_pixels_clipped"],
    }


def format_overlay(section: dict[str, Any]) -> str:
    """One line for the text report."""
    hidden = section["frames_suppressed"]
    return (
        f"overlay: shown on {section['frames_shown']} frames, suppressed on "
        f"{sum(hidden.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in hidden.items())})" if hidden else "")
        + f"; pixels outside the imaging region {section['pixels_outside_roi']}"
    )


def overlay_live(counters: Counter[str], off: str) -> dict[str, Any]:
    """The render stage's live figures for the viewer: shown, suppressed by reason, and why
    the newest frame's overlay is off ("" while it is drawn)."""
    section = overlay_summary([counters])
    return {
        "shown": section["frames_shown"],
        "suppressed": section["frames_suppressed"],
        "off": off,
    }
