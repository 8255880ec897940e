"""ScaleBarAnnotator: an L-shaped scale in millimetres in a corner (bottom-right by default),
from pixel spacing; SpacingNoteAnnotator: the "spacing unverified" note drawn instead where the
source doubts its spacing.

The horizontal arm spans `mm` millimetres across columns (col_mm per pixel), the vertical arm
the same millimetres along rows (row_mm per pixel), so the scale stays true for non-square
pixels. The arms meet in the corner and run inwards. `mm` is the largest 1-2-5 x 10^k value
whose horizontal arm fits in `fraction` of the width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stream.render.annotator import Annotator, check_margin, check_text_scale
from stream.render.color import BGR
from stream.render.corner import check_corner, is_bottom, is_right, place

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE: BGR = (255, 255, 255)
BLACK: BGR = (0, 0, 0)
AMBER: BGR = (0, 191, 255)
UNVERIFIED_TEXT = "spacing unverified"


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
    corner: tuple[int, int]  # (x, y) where the arms meet
    direction: tuple[int, int]  # (+1 or -1, +1 or -1): where the arms run from the corner
    text: str
    text_origin: tuple[int, int]
    scale: float
    thickness: int


class ScaleBarAnnotator(Annotator):
    """Draw the scale bar (see the module doc)."""

    def __init__(
        self,
        fraction: float = 0.2,
        margin: int = 12,
        text_scale: float | None = None,
        corner: str = "bottom-right",
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = float(fraction)
        self.margin = check_margin(margin)
        self.text_scale = check_text_scale(text_scale)
        self.corner = check_corner(corner)

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
        right, bottom = is_right(self.corner), is_bottom(self.corner)
        m = self.margin
        corner = (width - 1 - m if right else m, height - 1 - m if bottom else m)
        direction = (-1 if right else 1, -1 if bottom else 1)
        text = format_mm(mm)
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
        tx = corner[0] - tw - 3 * thick if right else corner[0] + 3 * thick
        ty = corner[1] - 3 * thick - base if bottom else corner[1] + 3 * thick + th
        return ScaleBarLayout(
            mm, length_x, length_y, corner, direction, text, (tx, ty), scale, thick
        )

    def paint(self, canvas: np.ndarray, spacing: tuple[float, float]) -> None:
        """Draw the scale bar into `canvas`, a BGR array you own, in place."""
        lay = self.layout(canvas.shape[0], canvas.shape[1], spacing)
        if lay is None:
            return
        cx, cy = lay.corner
        sx, sy = lay.direction
        t = lay.thickness
        arm_x = (cx, cx + sx * (lay.length_x - 1), cy, cy + sy * (t - 1))  # x0, x1, y0, y1
        arm_y = (cx, cx + sx * (t - 1), cy, cy + sy * (lay.length_y - 1))
        for color, grow in ((BLACK, 1), (WHITE, 0)):  # a dark outline keeps it readable
            for xa, xb, ya, yb in (arm_x, arm_y):
                top_left = (min(xa, xb) - grow, min(ya, yb) - grow)
                cv2.rectangle(canvas, top_left, (max(xa, xb) + grow, max(ya, yb) + grow), color, -1)
        cv2.putText(canvas, lay.text, lay.text_origin, FONT, lay.scale, BLACK, t + 2, cv2.LINE_AA)
        cv2.putText(canvas, lay.text, lay.text_origin, FONT, lay.scale, WHITE, t, cv2.LINE_AA)


class SpacingNoteAnnotator(Annotator):
    """The amber "spacing unverified" note, in the scale bar's corner: drawn instead of the bar
    where the source itself doubts the frame's spacing (no measurement is offered)."""

    def __init__(
        self, margin: int = 12, text_scale: float | None = None, corner: str = "bottom-right"
    ) -> None:
        self.margin = check_margin(margin)
        self.text_scale = check_text_scale(text_scale)
        self.corner = check_corner(corner)

    def layout(self, height: int, width: int) -> tuple[tuple[int, int, int, int], tuple[int, int], float, int]:
        """(box x0, y0, x1, y1 exclusive; text origin; text scale; thickness)."""
        scale = self.text_scale or min(max(height / 1080 * 0.7, 0.35), 1.4)
        thick = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(UNVERIFIED_TEXT, FONT, scale, thick)
        pad = 2 * thick
        bw, bh = tw + 2 * pad, th + base + 2 * pad
        x, y = place(self.corner, width, height, bw, bh, self.margin)
        box = (x, y, min(x + bw, width), min(y + bh, height))
        return box, (x + pad, y + pad + th), scale, thick

    def paint(self, canvas: np.ndarray) -> None:
        """Draw the note into `canvas`, a BGR array you own, in place."""
        (x0, y0, x1, y1), origin, scale, thick = self.layout(canvas.shape[0], canvas.shape[1])
        canvas[y0:y1, x0:x1] //= 3  # a dark box under the text
        cv2.putText(canvas, UNVERIFIED_TEXT, origin, FONT, scale, AMBER, thick, cv2.LINE_AA)
