"""The imaging region carried in `Frame.meta["roi"]`, and its pixel mask.

Contract (docs/protocol.md): `meta["roi"]` is `{"source": "dicom" | "auto" | "config",
"polygon": [[x, y], ...]}` in image pixel coordinates (a rectangle is a 4-point polygon whose
corners are the first and last pixel columns/rows inside it), or `null` while a region is expected
but not known yet (the automatic detector warming up, or re-detecting after a layout change).
The key is absent when the source makes no claim about a region (`roi: none`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

ROI_KEY = "roi"
SOURCES = ("dicom", "auto", "config")
MAX_POINTS = 1024


@dataclass(frozen=True)
class Region:
    """An imaging region: where it came from and its polygon (pixel coordinates, x right, y down)."""

    source: str
    polygon: tuple[tuple[float, float], ...]

    def meta(self) -> dict[str, Any]:
        """The JSON value for `meta["roi"]`."""
        return {"source": self.source, "polygon": [[x, y] for x, y in self.polygon]}

    def mask(self, height: int, width: int) -> np.ndarray:
        """Boolean HxW mask of the pixels inside the polygon (its edges included)."""
        return polygon_mask(self.polygon, height, width)


def rect_polygon(x0: float, y0: float, x1: float, y1: float) -> tuple[tuple[float, float], ...]:
    """The 4-point polygon of the rectangle with first/last pixel corners (x0, y0), (x1, y1)."""
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def check_polygon(value: Any) -> tuple[tuple[float, float], ...]:
    """A polygon of 3..1024 finite [x, y] points; ValueError with a one-line reason otherwise."""
    if not isinstance(value, (list, tuple)) or not 3 <= len(value) <= MAX_POINTS:
        raise ValueError(
            f"polygon must be a list of 3 to {MAX_POINTS} [x, y] points, got {value!r:.60}"
        )
    points = []
    for p in value:
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
            or not all(math.isfinite(v) for v in p)
        ):
            raise ValueError(f"polygon point must be [x, y], two finite numbers, got {p!r:.60}")
        points.append((float(p[0]), float(p[1])))
    return tuple(points)


class Absent:
    """Marker: the frame's meta has no `roi` key (the source makes no claim)."""


ABSENT = Absent()


def region_from_meta(meta: dict[str, Any]) -> Region | None | Absent:
    """The frame's region; None while expected but unknown; ABSENT when the key is missing.

    Raises ValueError (one line) for a malformed value.
    """
    if ROI_KEY not in meta:
        return ABSENT
    value = meta[ROI_KEY]
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("source") not in SOURCES:
        raise ValueError(
            f'roi must be null or {{"source": one of {", ".join(SOURCES)}, "polygon": [...]}}, '
            f"got {value!r:.60}"
        )
    return Region(str(value["source"]), check_polygon(value.get("polygon")))


def polygon_mask(polygon: tuple[tuple[float, float], ...], height: int, width: int) -> np.ndarray:
    """Boolean HxW mask of the pixels inside `polygon` (edges included), clipped to the image."""
    raster = np.zeros((height, width), np.uint8)
    pts = np.round(np.asarray(polygon, np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(raster, [pts], 1)
    return raster.view(bool)


class MaskCache:
    """The pixel mask of the last region asked for, reused while region and size are unchanged."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._mask = np.zeros((0, 0), bool)

    def get(self, region: Region, height: int, width: int) -> np.ndarray:
        key = (region.polygon, height, width)
        if key != self._key:
            self._mask = region.mask(height, width)
            self._key = key
        return self._mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union
