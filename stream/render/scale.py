"""ScaleBarAnnotator: an L-shaped scale in millimetres at the bottom-right, from pixel spacing.

The horizontal arm spans `mm` millimetres across columns (col_mm per pixel), the vertical arm
the same millimetres down rows (row_mm per pixel), so the scale stays true for non-square pixels.
`mm` is the largest 1-2-5 x 10^k value whose horizontal arm fits in `fraction` of the width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stream.render.canvas import check_canvas, owned_copy
from stream.render.color import BGR

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE: BGR = (255, 255, 255)
BLACK: BGR = (0, 0, 0)


def nice_length(max_mm: float) -> float | None:
    """The largest 1, 2 or 5 x 10^k not above `max_mm` (None if `max_mm` is not > 0)."""
    if not (math.isfinite(max_mm) and max_mm > 0):
        return None
    base = 10.0 ** math.floor(math.log10(max_mm))
    for step in (5.0, 2.0, 1.0):
        if step * base <= max_mm * (1 + 1e-9):
            return step * base
    return base  # not reached: 1 x base <= max_mm always


def format_mm(mm: float) -> str:
    if mm >= 10:
        return f"{mm / 10:g} cm" if mm % 10 == 0 and mm >= 100 else f"{mm:g} mm"
    return f"{mm:g} mm"


@dataclass(frozen=True)
class ScaleBarLayout:
    mm: float
    length_x: int  # horizontal arm, pixels
    length_y: int  # vertical arm, pixels
    corner: tuple[int, int]  # (x, y) where the arms meet (bottom-right)
    text: str
    text_origin: tuple[int, int]
    scale: float
    thickness: int


class ScaleBarAnnotator:
    """Draw the scale bar (see the module doc)."""

    def __init__(
        self, fraction: float = 0.2, margin: int = 12, text_scale: float | None = None
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if text_scale is not None and text_scale <= 0:
            raise ValueError(f"text_scale must be > 0, got {text_scale}")
        self.fraction = float(fraction)
        self.margin = int(margin)
        self.text_scale = text_scale

    def layout(
        self, height: int, width: int, spacing: tuple[float, float]
    ) -> ScaleBarLayout | None:
        """Where the bar goes on a `height` x `width` image; None if it cannot fit."""
        row_mm, col_mm = spacing
        mm = nice_length(width * self.fraction * col_mm)
        if mm is None:
            return None
        length_x = round(mm / col_mm)
        length_y = round(mm / row_mm)
        if length_x < 4 or length_y > height - 2 * self.margin:
            return None
        scale = self.text_scale or min(max(height / 1080 * 0.7, 0.35), 1.4)
        thick = max(1, round(scale * 2))
        corner = (width - 1 - self.margin, height - 1 - self.margin)
        text = format_mm(mm)
        (tw, _th), base = cv2.getTextSize(text, FONT, scale, thick)
        text_origin = (corner[0] - tw - 3 * thick, corner[1] - 3 * thick - base)
        return ScaleBarLayout(mm, length_x, length_y, corner, text, text_origin, scale, thick)

    def annotate(self, image: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
        """Return a new image: `image` (BGR, untouched) with the scale bar drawn."""
        canvas = owned_copy(image)
        self.draw(canvas, spacing)
        return canvas

    def draw(self, canvas: np.ndarray, spacing: tuple[float, float]) -> None:
        """Draw the scale bar into `canvas`, a BGR array you own, in place."""
        check_canvas(canvas)
        lay = self.layout(canvas.shape[0], canvas.shape[1], spacing)
        if lay is None:
            return
        x1, y1 = lay.corner
        x0, y0 = x1 - lay.length_x + 1, y1 - lay.length_y + 1
        t = lay.thickness
        for color, extra in ((BLACK, 2), (WHITE, 0)):  # a dark outline keeps it readable
            w = t + extra
            cv2.rectangle(
                canvas, (x0 - extra // 2, y1 - w + 1), (x1 + extra // 2, y1 + extra // 2), color, -1
            )
            cv2.rectangle(
                canvas, (x1 - w + 1, y0 - extra // 2), (x1 + extra // 2, y1 + extra // 2), color, -1
            )
        cv2.putText(canvas, lay.text, lay.text_origin, FONT, lay.scale, BLACK, t + 2, cv2.LINE_AA)
        cv2.putText(canvas, lay.text, lay.text_origin, FONT, lay.scale, WHITE, t, cv2.LINE_AA)
