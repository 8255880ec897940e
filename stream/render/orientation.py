"""OrientationAnnotator: patient-direction letters at the image edges.

From a frame's patient orientation (row_direction, column_direction): the row direction (where
the column index increases) is written at the right edge and its opposite at the left, the column
direction (where the row index increases) at the bottom and its opposite at the top. For
example ("L", "P"): R left, L right, A top, P bottom.

With a `corner` instead of `"edges"`, a compact glyph is drawn there instead: an arrow along the
rows labelled with the row direction and an arrow down the columns labelled with the column
direction (for ("L", "P"): an arrow to the right marked L, an arrow down marked P), so the letters
stay clear of the scanner's text along the edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.geometry import opposite
from stream.render.annotator import Annotator, check_margin, check_text_scale
from stream.render.color import BGR
from stream.render.corner import CORNERS, check_corner, place

FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK: BGR = (0, 0, 0)
DEFAULT_COLOR: BGR = (80, 230, 255)  # amber: distinct from label colours and the white HUD
PLACES = ("edges", *CORNERS)


@dataclass(frozen=True)
class OrientationLayout:
    labels: list[tuple[str, tuple[int, int]]]  # text, bottom-left origin
    scale: float
    thickness: int
    arrows: list[tuple[tuple[int, int], tuple[int, int]]]  # (from, to): a corner glyph's axes


class OrientationAnnotator(Annotator):
    """Draw the direction letters (see the module doc)."""

    def __init__(
        self,
        color: BGR = DEFAULT_COLOR,
        margin: int = 6,
        text_scale: float | None = None,
        corner: str = "edges",
    ) -> None:
        self.color = color
        self.margin = check_margin(margin)
        self.text_scale = check_text_scale(text_scale)
        self.corner = check_corner(corner, PLACES)

    def layout(self, height: int, width: int, orientation: tuple[str, str]) -> OrientationLayout:
        row_dir, col_dir = orientation
        scale = self.text_scale or min(max(height / 1080 * 0.9, 0.4), 1.8)
        thick = max(1, round(scale * 2))
        m = self.margin
        if self.corner != "edges":
            return self._glyph(height, width, orientation, scale, thick)
        labels = []
        texts = [opposite(row_dir), row_dir, opposite(col_dir), col_dir]
        for text, where in zip(texts, ("left", "right", "top", "bottom"), strict=True):
            (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
            x = {"left": m, "right": width - m - tw}.get(where, (width - tw) // 2)
            y = {"top": m + th, "bottom": height - m - base}.get(where, (height + th) // 2)
            labels.append((text, (x, y)))
        return OrientationLayout(labels, scale, thick, [])

    def _glyph(
        self, height: int, width: int, orientation: tuple[str, str], scale: float, thick: int
    ) -> OrientationLayout:
        """Two arrows from one origin, each with its direction letter, boxed in the corner."""
        row_dir, col_dir = orientation
        (rw, rh), rb = cv2.getTextSize(row_dir, FONT, scale, thick)
        (cw, ch), cb = cv2.getTextSize(col_dir, FONT, scale, thick)
        arm = max(rh, ch) * 2
        gap = max(2, thick * 2)
        tip = round(arm * 0.3) + thick  # an arrow head spreads this far either side of its shaft
        top = max(tip, (rh + 1) // 2 + thick)
        box_w = tip + max(arm + gap + rw, cw) + thick
        box_h = top + arm + gap + ch + cb + thick
        x0, y0 = place(self.corner, width, height, box_w, box_h, self.margin)
        ox, oy = x0 + tip, y0 + top
        labels = [(row_dir, (ox + arm + gap, oy + rh // 2)), (col_dir, (ox, oy + arm + gap + ch))]
        arrows = [((ox, oy), (ox + arm, oy)), ((ox, oy), (ox, oy + arm))]
        return OrientationLayout(labels, scale, thick, arrows)

    def paint(self, canvas: np.ndarray, orientation: tuple[str, str]) -> None:
        """Draw the letters into `canvas`, a BGR array you own, in place."""
        lay = self.layout(canvas.shape[0], canvas.shape[1], orientation)
        for color, extra in ((BLACK, 2), (self.color, 0)):
            for start, end in lay.arrows:
                cv2.arrowedLine(
                    canvas, start, end, color, lay.thickness + extra, cv2.LINE_AA, tipLength=0.3
                )
        for text, origin in lay.labels:
            cv2.putText(
                canvas, text, origin, FONT, lay.scale, BLACK, lay.thickness + 2, cv2.LINE_AA
            )
            cv2.putText(
                canvas, text, origin, FONT, lay.scale, self.color, lay.thickness, cv2.LINE_AA
            )
