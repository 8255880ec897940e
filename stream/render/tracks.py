"""Track overlays: TrackTrails (the render stage's memory of recent centres per track id),
TrailAnnotator (those centres as short polylines) and TipAnnotator (a marker at each box's
centre: for a tool-tip detector, the tool tip)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from stream.frame import Box
from stream.render.annotator import Annotator, StrokeAnnotator
from stream.render.color import BGR, check_palette, label_color

Point = tuple[float, float]


def box_centre(box: Box) -> Point:
    return ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)


def tracked_boxes(boxes: Sequence[Box], track_ids: Sequence[int]) -> tuple[list[Box], list[int]]:
    """The boxes that have a track id (>= 0), the first (best-scored) one of each id, with ids."""
    if len(track_ids) != len(boxes):
        raise ValueError(f"{len(track_ids)} track ids for {len(boxes)} boxes")
    order = sorted(range(len(boxes)), key=lambda i: -boxes[i].score)
    seen: set[int] = set()
    keep = []
    for i in order:
        if track_ids[i] >= 0 and track_ids[i] not in seen:
            seen.add(track_ids[i])
            keep.append(i)
    keep.sort()
    return [boxes[i] for i in keep], [track_ids[i] for i in keep]


class TrackTrails:
    """The last `length` centres of each track id, over the result frames given to `update`.
    An id not seen for `length` updates is forgotten (its trail would be all history)."""

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError(f"trail length must be >= 0, got {length}")
        self.length = length
        self._trails: dict[int, deque[Point]] = {}
        self._seen: dict[int, int] = {}
        self._updates = 0

    def update(self, boxes: Sequence[Box], track_ids: Sequence[int]) -> None:
        """Add one result's boxes: the centre of each track's best box joins its trail."""
        if track_ids and len(track_ids) != len(boxes):
            raise ValueError(f"{len(track_ids)} track ids for {len(boxes)} boxes")
        if self.length == 0 or (boxes and not track_ids):  # untracked boxes: no result to add
            return
        self._updates += 1
        for box, tid in zip(*tracked_boxes(boxes, track_ids), strict=True):
            self._trails.setdefault(tid, deque(maxlen=self.length)).append(box_centre(box))
            self._seen[tid] = self._updates
        for tid in [t for t, at in self._seen.items() if self._updates - at >= self.length]:
            del self._trails[tid], self._seen[tid]

    def trails(self) -> dict[int, list[Point]]:
        return {tid: list(points) for tid, points in self._trails.items()}


class TrailAnnotator(StrokeAnnotator):
    """Draw each track's recent centres as a polyline in its id's colour, thinner when older."""

    def paint(self, canvas: np.ndarray, trails: Mapping[int, Sequence[Point]]) -> None:
        """Draw `trails` into `canvas`, a BGR array you own, in place."""
        for tid, points in trails.items():
            color = label_color(self.palette, tid)
            pts = [(int(round(x)), int(round(y))) for x, y in points]
            for k in range(1, len(pts)):
                width = max(1, round(self.thickness * k / (len(pts) - 1)))
                cv2.line(canvas, pts[k - 1], pts[k], color, width, cv2.LINE_AA)


class TipAnnotator(Annotator):
    """Mark each box's centre with a ring and cross hair (white, for any background)."""

    def __init__(self, radius: int = 5, color: BGR = (255, 255, 255), thickness: int = 1) -> None:
        if radius < 1 or thickness < 1:
            raise ValueError(f"radius and thickness must be >= 1, got {radius} and {thickness}")
        self.radius, self.thickness = int(radius), int(thickness)
        self.color = check_palette([color])[0]

    def paint(self, canvas: np.ndarray, boxes: Sequence[Box]) -> None:
        """Mark the centres of `boxes` in `canvas`, a BGR array you own, in place."""
        r = self.radius
        for box in boxes:
            x, y = (int(round(v)) for v in box_centre(box))
            cv2.circle(canvas, (x, y), r, self.color, self.thickness, cv2.LINE_AA)
            cv2.line(canvas, (x - r - 2, y), (x + r + 2, y), self.color, self.thickness)
            cv2.line(canvas, (x, y - r - 2), (x, y + r + 2), self.color, self.thickness)
