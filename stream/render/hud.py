"""HudAnnotator: the live-stats panel (top-left, or another corner; a classifier's top-k labels
are its last lines) and the red "OVERLAY STALE" banner (top centre; moved off the panel where
they would overlap)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.render.annotator import Annotator, check_margin, check_opacity, check_text_scale
from stream.render.corner import check_corner, is_bottom, place

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
AMBER = (0, 191, 255)
RED = (40, 40, 255)
BANNER_RED = (0, 0, 200)

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), clipped to the image


@dataclass(frozen=True)
class HudData:
    """What the HUD shows; None reads as "-" (not known yet)."""

    seq: int
    fps: float | None = None
    latency_p50_ms: float | None = None  # glass-to-glass
    latency_p99_ms: float | None = None
    budget_ms: float | None = None
    budget_misses: int = 0
    drops: int = 0
    model: str = ""
    backend: str = ""
    overlay_stale_ms: float | None = None  # set while the overlay is withheld as too old
    overlay_age_ms: float | None = None  # set when the overlay drawn is from an older frame
    overlay_suppressed: str = ""  # why the model's output is not drawn (stream.render.overlay_policy)
    classes: tuple[tuple[str, float], ...] = ()  # a classifier's top-k (name, probability)

    @property
    def budget_missed(self) -> bool:
        return (
            self.budget_ms is not None
            and self.latency_p99_ms is not None
            and self.latency_p99_ms > self.budget_ms
        )


TextLine = tuple[str, tuple[int, int, int], tuple[int, int]]  # text, BGR colour, origin


@dataclass(frozen=True)
class HudLayout:
    """Where `HudAnnotator.draw` puts everything on one image size."""

    panel: Rect
    banner: Rect | None  # only while the overlay is stale
    scale: float
    thickness: int
    lines: list[TextLine]  # the panel's text
    banner_line: TextLine | None


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def hud_lines(data: HudData) -> list[tuple[str, tuple[int, int, int]]]:
    """The panel's text lines and their colours."""
    missed = data.budget_missed
    model = data.model or "-"
    if data.backend:
        model = f"{model} ({data.backend})"
    lines = [
        (f"seq {data.seq}  fps {_num(data.fps, '.1f')}", WHITE),
        (
            f"g2g p50 {_num(data.latency_p50_ms, '.1f')} ms  p99 {_num(data.latency_p99_ms, '.1f')} ms",
            RED if missed else WHITE,
        ),
        (f"budget {_num(data.budget_ms, '.1f')} ms  misses {data.budget_misses}", WHITE),
        (f"drops {data.drops}", WHITE),
        (f"model {model}", WHITE),
    ]
    lines += [(f"{i}. {name} {p:.2f}", WHITE) for i, (name, p) in enumerate(data.classes, 1)]
    if data.overlay_age_ms is not None and data.overlay_age_ms > 0:
        lines.append((f"overlay from {data.overlay_age_ms:.0f} ms earlier", AMBER))
    if data.overlay_suppressed:
        lines.append((f"overlay off: {data.overlay_suppressed}", AMBER))
    if missed:
        lines.append(("BUDGET MISSED", RED))
    return lines


class HudAnnotator(Annotator):
    """A translucent stats panel in `corner`; a red banner while the overlay is stale.

    `text_scale` None scales the text with the image height (readable from 256 px to 4K).
    When p99 exceeds the budget, the p99 line turns red, a "BUDGET MISSED" line is added and the
    panel gets a red border.
    """

    def __init__(
        self,
        text_scale: float | None = None,
        opacity: float = 0.6,
        margin: int = 8,
        corner: str = "top-left",
    ) -> None:
        self.text_scale = check_text_scale(text_scale)
        self.opacity = check_opacity(opacity)
        self.margin = check_margin(margin)
        self.corner = check_corner(corner)

    def _scale(self, height: int) -> float:
        if self.text_scale is not None:
            return self.text_scale
        return min(max(height / 1080 * 0.8, 0.35), 1.6)

    def layout(self, height: int, width: int, data: HudData) -> HudLayout:
        """Where `draw` puts the panel, the banner and their text on a `height` x `width` image."""
        scale = self._scale(height)
        thick = max(1, round(scale * 1.5))
        pad = max(3, round(8 * scale))
        texts = hud_lines(data)
        sizes = [cv2.getTextSize(t, FONT, scale, thick) for t, _ in texts]
        line_h = max(h + b for (_, h), b in sizes) + pad // 2
        m = self.margin
        panel_w = max(w for (w, _), _ in sizes) + 3 * pad
        panel_h = line_h * len(sizes) + 2 * pad - pad // 2
        px, py = place(self.corner, width, height, panel_w, panel_h, m)
        lines = [
            (text, color, (px + pad, py + pad + i * line_h + h))
            for i, ((text, color), ((_, h), _)) in enumerate(zip(texts, sizes, strict=True))
        ]
        panel = (px, py, px + panel_w, py + panel_h)
        banner = banner_line = None
        if data.overlay_stale_ms is not None:
            text = f"OVERLAY STALE ({data.overlay_stale_ms:.0f} ms)"
            (tw, th), tb = cv2.getTextSize(text, FONT, scale * 1.2, thick + 1)
            bw, bh = tw + 4 * pad, th + tb + 2 * pad
            x0 = max((width - bw) // 2, 0)
            y0 = m
            overlaps = x0 < panel[2] + m and x0 + bw + m > panel[0]
            if overlaps and not is_bottom(self.corner) and y0 < panel[3] + m:
                y0 = panel[3] + m  # under a top panel
            elif overlaps and is_bottom(self.corner) and y0 + bh + m > panel[1]:
                y0 = max(panel[1] - m - bh, 0)  # above a bottom panel
            banner = _clip((x0, y0, x0 + bw, y0 + bh), width, height)
            banner_line = (text, WHITE, (x0 + 2 * pad, y0 + pad + th))
        return HudLayout(_clip(panel, width, height), banner, scale, thick, lines, banner_line)

    def paint(self, canvas: np.ndarray, data: HudData) -> None:
        """Draw the HUD into `canvas`, a BGR array you own, in place."""
        lay = self.layout(canvas.shape[0], canvas.shape[1], data)
        x0, y0, x1, y1 = lay.panel
        if x1 > x0 and y1 > y0:
            roi = canvas[y0:y1, x0:x1]
            roi[...] = cv2.convertScaleAbs(roi, alpha=1.0 - self.opacity)
            if data.budget_missed:
                cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), RED, lay.thickness)
        for text, color, origin in lay.lines:
            cv2.putText(canvas, text, origin, FONT, lay.scale, color, lay.thickness, cv2.LINE_AA)
        if lay.banner is not None and lay.banner_line is not None:
            bx0, by0, bx1, by1 = lay.banner
            canvas[by0:by1, bx0:bx1] = BANNER_RED
            text, color, origin = lay.banner_line
            cv2.putText(
                canvas, text, origin, FONT, lay.scale * 1.2, color, lay.thickness + 1, cv2.LINE_AA
            )


def _clip(rect: Rect, width: int, height: int) -> Rect:
    x0, y0, x1, y1 = rect
    return (min(x0, width), min(y0, height), min(x1, width), min(y1, height))
