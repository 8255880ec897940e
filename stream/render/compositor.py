"""Compositor: several streams' newest rendered images laid out as one BGR image.

Layouts: `grid` (near-square, every cell the size of the largest tile), `side_by_side` (one row,
every tile scaled to the tallest height) and `pip` (the first tile full size, up to three more
as insets in the bottom-right, bottom-left, top-right, top-left corners). Every tile is scaled
keeping its aspect ratio and titled with its stream id (top centre; the age mark bottom centre). Tiles are aligned by capture time: a
tile whose frame was captured more than `max_skew_ms` before the newest tile's is marked
"STALE <age> ms" (red frame and label), never silently shown as current.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from stream.render.canvas import check_bgr

Layout = Literal["grid", "side_by_side", "pip"]
LAYOUTS: tuple[Layout, ...] = ("grid", "side_by_side", "pip")
MAX_PIP_INSETS = 3
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
RED = (40, 40, 255)
BACKGROUND = (0, 0, 0)


@dataclass(frozen=True)
class Tile:
    """One stream's newest rendered image (BGR uint8) and its frame's capture time."""

    stream: str
    image: np.ndarray
    capture_ns: int


def stale_ages(tiles: Sequence[Tile], max_skew_ms: float) -> dict[str, float]:
    """Stream id -> age in ms behind the newest tile, for every tile older than `max_skew_ms`."""
    if not tiles:
        return {}
    newest = max(t.capture_ns for t in tiles)
    ages = {t.stream: (newest - t.capture_ns) / 1e6 for t in tiles}
    return {s: age for s, age in ages.items() if age > max_skew_ms}


def _fit(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """`image` scaled to fit w x h keeping its aspect ratio (at least 1 x 1)."""
    ih, iw = image.shape[:2]
    scale = min(w / iw, h / ih)
    size = (max(1, round(iw * scale)), max(1, round(ih * scale)))
    if size == (iw, ih):
        return image
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


class Compositor:
    """Lays tiles out as one image with per-tile titles and stale marks (see the module doc).

    Style in the constructor; `annotate(tiles)` returns a new image and never touches the
    tiles' images.
    """

    def __init__(
        self,
        layout: Layout = "grid",
        max_skew_ms: float = 100.0,
        pip_scale: float = 0.3,
        titles: bool = True,
        gap: int = 2,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if not (math.isfinite(max_skew_ms) and max_skew_ms >= 0):
            raise ValueError(f"max_skew_ms must be a finite number >= 0, got {max_skew_ms}")
        if not 0.05 <= pip_scale <= 0.5:
            raise ValueError(f"pip_scale must be in 0.05-0.5, got {pip_scale}")
        if gap < 0:
            raise ValueError(f"gap must be >= 0, got {gap}")
        self.layout = layout
        self.max_skew_ms = max_skew_ms
        self.pip_scale = pip_scale
        self.titles = titles
        self.gap = gap

    def stale(self, tiles: Sequence[Tile]) -> dict[str, float]:
        """The tiles `annotate` marks stale: stream id -> age behind the newest, in ms."""
        return stale_ages(tiles, self.max_skew_ms)

    def annotate(self, tiles: Sequence[Tile]) -> np.ndarray:
        """One BGR image of every tile, laid out in the order given."""
        if not tiles:
            raise ValueError("compositor: no tiles to lay out")
        streams = [t.stream for t in tiles]
        if len(set(streams)) != len(streams):
            raise ValueError(f"compositor: a stream appears twice in {streams}")
        for t in tiles:
            check_bgr(t.image, f"tile {t.stream!r}")
        if self.layout == "pip" and len(tiles) > 1 + MAX_PIP_INSETS:
            raise ValueError(
                f"compositor: pip shows at most {1 + MAX_PIP_INSETS} streams, got {len(tiles)}"
            )
        places = getattr(self, f"_{self.layout}")(tiles)
        stale = self.stale(tiles)
        canvas = np.zeros(self._size(places), np.uint8)
        canvas[:] = BACKGROUND
        for tile, (x, y, image) in zip(tiles, places, strict=True):
            h, w = image.shape[:2]
            canvas[y : y + h, x : x + w] = image
            self._mark(canvas, tile.stream, (x, y, w, h), stale.get(tile.stream))
        return canvas

    @staticmethod
    def _size(places: list[tuple[int, int, np.ndarray]]) -> tuple[int, int, int]:
        h = max(y + img.shape[0] for x, y, img in places)
        w = max(x + img.shape[1] for x, y, img in places)
        return h, w, 3

    def _grid(self, tiles: Sequence[Tile]) -> list[tuple[int, int, np.ndarray]]:
        cols = math.ceil(math.sqrt(len(tiles)))
        cw = max(t.image.shape[1] for t in tiles)
        ch = max(t.image.shape[0] for t in tiles)
        places = []
        for i, t in enumerate(tiles):
            img = _fit(t.image, cw, ch)
            r, c = divmod(i, cols)
            x = c * (cw + self.gap) + (cw - img.shape[1]) // 2
            y = r * (ch + self.gap) + (ch - img.shape[0]) // 2
            places.append((x, y, img))
        return places

    def _side_by_side(self, tiles: Sequence[Tile]) -> list[tuple[int, int, np.ndarray]]:
        h = max(t.image.shape[0] for t in tiles)
        places, x = [], 0
        for t in tiles:
            ih, iw = t.image.shape[:2]
            img = _fit(t.image, max(1, round(iw * h / ih)), h)
            places.append((x, (h - img.shape[0]) // 2, img))
            x += img.shape[1] + self.gap
        return places

    def _pip(self, tiles: Sequence[Tile]) -> list[tuple[int, int, np.ndarray]]:
        main = tiles[0].image
        mh, mw = main.shape[:2]
        iw, ih = max(1, round(mw * self.pip_scale)), max(1, round(mh * self.pip_scale))
        margin = max(2, round(min(mw, mh) * 0.02))
        places = [(0, 0, main)]
        for k, t in enumerate(tiles[1:]):
            img = _fit(t.image, iw, ih)
            right, bottom = k in (0, 2), k in (0, 1)
            x = mw - margin - img.shape[1] if right else margin
            y = mh - margin - img.shape[0] if bottom else margin
            places.append((x, y, img))
        return places

    def _mark(
        self,
        canvas: np.ndarray,
        stream: str,
        rect: tuple[int, int, int, int],
        stale_ms: float | None,
    ) -> None:
        """The tile's title (top centre) and, when stale, a red frame and "STALE <age> ms"."""
        x, y, w, h = rect
        tile = canvas[y : y + h, x : x + w]  # a view: text drawn here is clipped to the tile
        scale = max(0.35, min(0.8, h / 480))
        thick = 1 if scale < 0.6 else 2
        if self.layout == "pip" and (x, y) != (0, 0):
            cv2.rectangle(tile, (0, 0), (w - 1, h - 1), WHITE, 1)
        if self.titles:
            _label(tile, stream, 0, scale, thick, WHITE)
        if stale_ms is not None:
            cv2.rectangle(tile, (0, 0), (w - 1, h - 1), RED, max(2, thick + 1))
            (_, th), base = cv2.getTextSize("S", FONT, scale, thick)
            _label(tile, f"STALE {stale_ms:.0f} ms", h - th - base - 8, scale, thick, RED)


def _label(
    tile: np.ndarray, text: str, y: int, scale: float, thick: int, colour: tuple[int, int, int]
) -> None:
    """`text` on a darkened box centred across the tile, `y` pixels down (the corners are the
    HUD's, the legend's, the notice's and the scale bar's)."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    y = max(0, y)
    x = max(0, (tile.shape[1] - tw - 8) // 2)
    box = tile[y : y + th + base + 6, x : x + tw + 8]
    box[:] = (box * 0.35).astype(np.uint8)
    cv2.putText(tile, text, (x + 4, y + th + 3), FONT, scale, colour, thick, cv2.LINE_AA)
