"""LegendAnnotator (class colours, and the confidence colour bar) and NoticeAnnotator (the model
card's notice, e.g. "Research use only, not for diagnosis"), each in a corner of the image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stream.render.annotator import Annotator, check_opacity, check_text_scale
from stream.render.color import BGR, check_palette, label_color
from stream.render.corner import Corner, check_corner, place

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE: BGR = (255, 255, 255)
AMBER: BGR = (0, 191, 255)
Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def _text_scale(height: int, text_scale: float | None) -> float:
    return text_scale if text_scale is not None else min(max(height / 1080 * 0.7, 0.33), 1.4)


def _darken(canvas: np.ndarray, rect: Rect, opacity: float) -> None:
    x0, y0, x1, y1 = rect
    x1, y1 = min(x1, canvas.shape[1]), min(y1, canvas.shape[0])
    if x1 > x0 and y1 > y0:
        roi = canvas[y0:y1, x0:x1]
        roi[...] = cv2.convertScaleAbs(roi, alpha=1.0 - opacity)


@dataclass(frozen=True)
class LegendLayout:
    panel: Rect
    swatches: list[tuple[Rect, BGR]]  # one per drawn label, same order as `entries`
    entries: list[tuple[str, tuple[int, int]]]  # text, origin
    bar: Rect | None  # the confidence colour bar, if shown
    scale: float
    thickness: int


class LegendAnnotator(Annotator):
    """A panel in `corner` with one colour swatch and name per label (background skipped) and,
    with `confidence_colors`, a colour bar from confidence 0 to 1."""

    def __init__(
        self,
        colors: Sequence[BGR] | None = None,
        corner: Corner = "top-right",
        text_scale: float | None = None,
        opacity: float = 0.6,
        margin: int = 8,
        skip_labels: Sequence[int] = (0,),
    ) -> None:
        self.text_scale = check_text_scale(text_scale)
        self.opacity = check_opacity(opacity)
        self.palette = check_palette(colors)
        self.corner = check_corner(corner)
        self.margin = int(margin)
        self.skip = frozenset(int(v) for v in skip_labels)

    def items(self, labels: Sequence[str]) -> list[tuple[str, BGR]]:
        """(name, colour) of each drawn label."""
        return [
            (name, label_color(self.palette, i))
            for i, name in enumerate(labels)
            if i not in self.skip
        ]

    def layout(
        self, height: int, width: int, labels: Sequence[str], confidence_bar: bool = False
    ) -> LegendLayout:
        items = self.items(labels)
        texts = [name for name, _ in items] + (["confidence 0 - 1"] if confidence_bar else [])
        scale = _text_scale(height, self.text_scale)
        thick = max(1, round(scale * 1.5))
        pad = max(3, round(8 * scale))
        sizes = [cv2.getTextSize(t, FONT, scale, thick)[0] for t in texts] or [(0, 0)]
        line_h = max(h for _, h in sizes) + pad
        sw = line_h - pad // 2
        panel_w = max(w for w, _ in sizes) + sw + 3 * pad
        panel_h = line_h * (len(texts) + (1 if confidence_bar else 0)) + pad
        x0, y0 = place(self.corner, width, height, panel_w, panel_h, self.margin)
        swatches, entries = [], []
        for i, (name, color) in enumerate(items):
            top = y0 + pad + i * line_h
            swatches.append(((x0 + pad, top, x0 + pad + sw, top + sw), color))
            entries.append((name, (x0 + 2 * pad + sw, top + sw - max(1, pad // 4))))
        bar = None
        if confidence_bar:
            top = y0 + pad + len(items) * line_h
            entries.append((texts[-1], (x0 + pad, top + sw - max(1, pad // 4))))
            bar = (x0 + pad, top + line_h, x0 + panel_w - pad, top + line_h + sw)
        return LegendLayout((x0, y0, x0 + panel_w, y0 + panel_h), swatches, entries, bar, scale, thick)

    def paint(
        self, canvas: np.ndarray, labels: Sequence[str], confidence_colors: np.ndarray | None = None
    ) -> None:
        """Draw in place into `canvas` (BGR, owned). `confidence_colors`: 256 x 1 x 3 BGR, the
        heat-map's colour of each confidence value (ConfidenceAnnotator.colors)."""
        if not self.items(labels) and confidence_colors is None:
            return
        lay = self.layout(canvas.shape[0], canvas.shape[1], labels, confidence_colors is not None)
        _darken(canvas, lay.panel, self.opacity)
        for (x0, y0, x1, y1), color in lay.swatches:
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), color, cv2.FILLED)
        for text, origin in lay.entries:
            cv2.putText(canvas, text, origin, FONT, lay.scale, WHITE, lay.thickness, cv2.LINE_AA)
        if lay.bar is not None and confidence_colors is not None:
            x0, y0, x1, y1 = lay.bar
            x1, y1 = min(x1, canvas.shape[1]), min(y1, canvas.shape[0])
            if x1 > x0 and y1 > y0:
                ramp = confidence_colors.reshape(1, 256, 3)
                canvas[y0:y1, x0:x1] = cv2.resize(ramp, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)


class NoticeAnnotator(Annotator):
    """The model card's notice (e.g. "Research use only, not for diagnosis") in `corner`, amber
    text on a darkened box, always readable over the image."""

    def __init__(
        self,
        corner: Corner = "bottom-left",
        text_scale: float | None = None,
        color: BGR = AMBER,
        opacity: float = 0.7,
        margin: int = 8,
    ) -> None:
        self.text_scale = check_text_scale(text_scale)
        self.corner = check_corner(corner)
        self.color = color
        self.opacity = float(opacity)
        self.margin = int(margin)

    def layout(self, height: int, width: int, text: str) -> tuple[Rect, tuple[int, int], float, int]:
        """The box, the text origin, the text scale and thickness."""
        scale = _text_scale(height, self.text_scale)
        thick = max(1, round(scale * 1.5))
        pad = max(3, round(6 * scale))
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
        w, h = tw + 2 * pad, th + base + 2 * pad
        x0, y0 = place(self.corner, width, height, w, h, self.margin)
        return (x0, y0, x0 + w, y0 + h), (x0 + pad, y0 + pad + th), scale, thick

    def paint(self, canvas: np.ndarray, text: str) -> None:
        """Draw `text` in place into `canvas` (BGR, owned); nothing for an empty text."""
        if not text:
            return
        box, origin, scale, thick = self.layout(canvas.shape[0], canvas.shape[1], text)
        _darken(canvas, box, self.opacity)
        cv2.putText(canvas, text, origin, FONT, scale, self.color, thick, cv2.LINE_AA)
