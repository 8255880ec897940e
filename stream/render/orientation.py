"""OrientationAnnotator: patient-direction letters at the image edges.

From a frame's patient orientation (row_direction, column_direction): the row direction (where
the column index increases) is written at the right edge and its opposite at the left, the column
direction (where the row index increases) at the bottom and its opposite at the top. For
example ("L", "P"): R left, L right, A top, P bottom.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.geometry import opposite
from stream.render.canvas import check_canvas, owned_copy
from stream.render.color import BGR

FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK: BGR = (0, 0, 0)
DEFAULT_COLOR: BGR = (80, 230, 255)  # amber: distinct from label colours and the white HUD


@dataclass(frozen=True)
class OrientationLayout:
    labels: list[tuple[str, tuple[int, int]]]  # text, bottom-left origin
    scale: float
    thickness: int


class OrientationAnnotator:
    """Draw the direction letters (see the module doc)."""

    def __init__(
        self, color: BGR = DEFAULT_COLOR, margin: int = 6, text_scale: float | None = None
    ) -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if text_scale is not None and text_scale <= 0:
            raise ValueError(f"text_scale must be > 0, got {text_scale}")
        self.color = color
        self.margin = int(margin)
        self.text_scale = text_scale

    def layout(self, height: int, width: int, orientation: tuple[str, str]) -> OrientationLayout:
        row_dir, col_dir = orientation
        scale = self.text_scale or min(max(height / 1080 * 0.9, 0.4), 1.8)
        thick = max(1, round(scale * 2))
        m = self.margin
        labels = []
        for text, where in (
            (opposite(row_dir), "left"),
            (row_dir, "right"),
            (opposite(col_dir), "top"),
            (col_dir, "bottom"),
        ):
            (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
            x = {"left": m, "right": width - m - tw}.get(where, (width - tw) // 2)
            y = {"top": m + th, "bottom": height - m - base}.get(where, (height + th) // 2)
            labels.append((text, (x, y)))
        return OrientationLayout(labels, scale, thick)

    def annotate(self, image: np.ndarray, orientation: tuple[str, str]) -> np.ndarray:
        """Return a new image: `image` (BGR, untouched) with the letters drawn."""
        canvas = owned_copy(image)
        self.draw(canvas, orientation)
        return canvas

    def draw(self, canvas: np.ndarray, orientation: tuple[str, str]) -> None:
        """Draw the letters into `canvas`, a BGR array you own, in place."""
        check_canvas(canvas)
        lay = self.layout(canvas.shape[0], canvas.shape[1], orientation)
        for text, origin in lay.labels:
            cv2.putText(
                canvas, text, origin, FONT, lay.scale, BLACK, lay.thickness + 2, cv2.LINE_AA
            )
            cv2.putText(
                canvas, text, origin, FONT, lay.scale, self.color, lay.thickness, cv2.LINE_AA
            )
