"""BoxAnnotator and LabelAnnotator: detection box outlines and their "name score" tags."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from stream.frame import Box
from stream.render.annotator import Annotator, StrokeAnnotator
from stream.render.color import BGR, check_palette, label_color

FONT = cv2.FONT_HERSHEY_SIMPLEX


def box_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer corners of `box`, clamped just outside the image so OpenCV can draw them."""
    coords = (box.x0, box.y0, box.x1, box.y1)
    if not all(math.isfinite(c) for c in coords):
        raise ValueError(f"box coordinates must be finite, got {box}")
    x0, y0, x1, y1 = (int(round(c)) for c in coords)
    x0, x1 = (min(max(v, -1), width) for v in (min(x0, x1), max(x0, x1)))
    y0, y1 = (min(max(v, -1), height) for v in (min(y0, y1), max(y0, y1)))
    return x0, y0, x1, y1


class BoxAnnotator(StrokeAnnotator):
    """Outline each box in its label's colour."""

    def paint(self, canvas: np.ndarray, boxes: Sequence[Box]) -> None:
        """Outline `boxes` in `canvas`, a BGR array you own, in place."""
        height, width = canvas.shape[:2]
        for box in boxes:
            x0, y0, x1, y1 = box_pixels(box, width, height)
            color = label_color(self.palette, box.label)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), color, self.thickness, cv2.LINE_8)


def text_color_on(background: BGR) -> BGR:
    """Black or white, whichever reads better on `background`."""
    b, g, r = background
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


class LabelAnnotator(Annotator):
    """Tag each box with "name score" (or "#id name score" for a tracked box) on a filled tag
    in its label's colour.

    `labels` are the class names (as in `Annotations.labels`): box label i reads `labels[i]`;
    `track_ids` (optional, one per box as in `Annotations.track_ids`) prefix "#id" where >= 0.
    The tag sits above the box's top-left corner, or just inside the box when there is no room.
    """

    def __init__(
        self,
        colors: Sequence[BGR] | None = None,
        text_scale: float = 0.5,
        text_thickness: int = 1,
        text_padding: int = 4,
    ) -> None:
        if text_scale <= 0:
            raise ValueError(f"text_scale must be > 0, got {text_scale}")
        if text_thickness < 1 or text_padding < 0:
            raise ValueError(
                f"text_thickness must be >= 1 and text_padding >= 0, got "
                f"{text_thickness} and {text_padding}"
            )
        self.palette = check_palette(colors)
        self.text_scale = float(text_scale)
        self.text_thickness = int(text_thickness)
        self.text_padding = int(text_padding)

    def paint(
        self,
        canvas: np.ndarray,
        boxes: Sequence[Box],
        labels: Sequence[str],
        track_ids: Sequence[int] = (),
    ) -> None:
        """Tag `boxes` in `canvas`, a BGR array you own, in place."""
        if track_ids and len(track_ids) != len(boxes):
            raise ValueError(f"{len(track_ids)} track ids for {len(boxes)} boxes")
        height, width = canvas.shape[:2]
        pad = self.text_padding
        for i, box in enumerate(boxes):
            if not 0 <= box.label < len(labels):
                raise ValueError(
                    f"box label {box.label} has no name: {len(labels)} labels given {list(labels)!r:.80}"
                )
            text = f"{labels[box.label]} {box.score:.2f}"
            if track_ids and track_ids[i] >= 0:
                text = f"#{track_ids[i]} {text}"
            (tw, th), baseline = cv2.getTextSize(text, FONT, self.text_scale, self.text_thickness)
            x0, y0, _, _ = box_pixels(box, width, height)
            tag_w, tag_h = tw + 2 * pad, th + baseline + 2 * pad
            left = min(max(x0, 0), max(width - tag_w, 0))
            top = y0 - tag_h if y0 - tag_h >= 0 else max(y0, 0)
            color = label_color(self.palette, box.label)
            right, bottom = left + tag_w - 1, top + tag_h - 1
            cv2.rectangle(canvas, (left, top), (right, bottom), color, cv2.FILLED)
            ink, origin = text_color_on(color), (left + pad, top + pad + th)
            cv2.putText(
                canvas, text, origin, FONT, self.text_scale, ink, self.text_thickness, cv2.LINE_AA
            )
