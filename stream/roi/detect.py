"""Automatic imaging-region detector for video without a DICOM header (capture cards, files, RTSP).

The scanner's user interface (text, rulers, colour bars, icons) is static from frame to frame;
the image inside the sector or rectangle is not (tissue motion, speckle, flow). The detector
keeps a short ring of small grey copies of the frames (every `sample_every`-th frame, shrunk by
the smallest integer factor that makes them at most `work_width` pixels wide), and every
`detect_every` frames it:

1. takes each pixel's temporal range (max - min) over the ring: "moving" above `motion_level`
   (raised above the noise of the darkest pixels for analog captures);
2. opens that mask (removes thin moving lines: the ECG sweep, a blinking cursor, counters) and
   closes it (fills the speckle's gaps and the dark, still blood pools inside a chamber);
3. keeps the largest connected component (at least `min_area` of the image) and returns its
   convex hull, simplified, in full-image pixel coordinates.

Layout changes (a depth or mode change on the scanner) are caught three ways: every sampled frame
is compared with the reference taken at the last detection *outside* the region (where the
static UI is); when more than `change_fraction` of those pixels changed, the region is dropped
at once (overlays are suppressed as `no_roi`), the ring restarts and a new region is detected
after `min_frames` samples (a sector growing over static background is caught this way). At each
detection the region of the newest `min_frames` + 2 samples alone is compared with the
window's: when it covers less than `shrink_coverage` of it, the image has shrunk (a depth
change), the older samples are forgotten and the newer region is used. A region that moves is
replaced by a detection whose IoU with it is below `keep_iou`. A frozen image (nothing moves)
keeps the last region.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from stream.roi.region import Region, iou, polygon_mask


@dataclass(frozen=True)
class DetectorSettings:
    """Tuning of `RegionDetector` (the defaults were measured on real cines; see docs)."""

    work_width: int = 160  # detection runs on frames scaled to at most this width
    window: int = 16  # samples in the ring
    sample_every: int = 2  # frames between samples
    min_frames: int = 4  # samples needed before the first detection
    detect_every: int = 8  # frames between detections
    motion_level: int = 1  # temporal range (0..255, of the scaled frames) above which it moves,
    # raised to `noise_factor` x the range of the darkest quarter of pixels (analog noise)
    noise_factor: float = 2.0
    static_level: int = 2  # at most this range: static (the UI the layout check watches)
    min_area: float = 0.04  # smallest region, as a fraction of the image
    change_level: int = 30  # grey difference that counts a pixel outside as changed
    change_fraction: float = 0.08  # fraction of outside pixels changed = a new layout
    keep_iou: float = 0.9  # a detection this close to the current region keeps it
    shrink_coverage: float = 0.85  # newest samples' region covers less of the window's: shrunk

    def validate(self) -> None:
        if not (16 <= self.work_width <= 4096 and 2 <= self.min_frames <= self.window):
            raise ValueError(f"detector settings out of range: {self}")


def noise_floor(stack: np.ndarray, spread: np.ndarray) -> float:
    """The temporal range of the darkest quarter of pixels: 0 for a clean digital frame (its
    black background never changes), about 4 sigma for a frame with analog noise."""
    darkest = stack[-1] <= np.percentile(stack[-1], 25)
    return float(np.median(spread[darkest])) if darkest.any() else 0.0


class RegionDetector:
    """Feed every frame to `update`; it returns the current region (None while unknown)."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self.settings.validate()
        self.ring: deque[np.ndarray] = deque(maxlen=self.settings.window)
        self.region: Region | None = None
        self.frames = 0
        self.changes = 0  # layout changes seen (region dropped or replaced)
        self._shape: tuple[int, int] | None = None
        self._reference: np.ndarray | None = None  # small frame at the last detection
        self._outside: np.ndarray | None = None  # small-frame mask outside the region
        self._outside_n = 0
        self._region_small: np.ndarray | None = None

    def reset(self) -> None:
        """Forget everything: the next region comes after `min_frames` samples."""
        self.ring.clear()
        self.region = None
        self._reference = self._outside = self._region_small = None

    def _step(self, width: int) -> int:
        return -(-width // self.settings.work_width)

    def _small(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8:  # gray16 / float32: scaled to 0..255 by the frame's range
            x = image.astype(np.float32)
            lo, hi = float(x.min()), float(x.max())
            image = ((x - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        step = self._step(w)  # an integer factor: OpenCV's fast area path
        if step == 1:
            return np.array(grey, np.uint8, copy=True)
        size = (max(1, w // step), max(1, h // step))
        return cv2.resize(
            grey[: size[1] * step, : size[0] * step], size, interpolation=cv2.INTER_AREA
        )

    def update(self, image: np.ndarray) -> Region | None:
        """Take one frame (HxW grey or HxWx3 uint8); return the region to use for it."""
        s = self.settings
        shape = (int(image.shape[0]), int(image.shape[1]))
        if shape != self._shape:  # a new frame size is a new layout
            if self._shape is not None:
                self.changes += 1
            self._shape = shape
            self.reset()
        index = self.frames
        self.frames += 1
        if index % s.sample_every:
            return self.region
        small = self._small(image)
        if self._layout_changed(small):
            self.changes += 1
            self.reset()
        self.ring.append(small)
        if len(self.ring) >= s.min_frames and (
            self.region is None or index % s.detect_every < s.sample_every
        ):
            self._detect(shape)
        return self.region

    def _layout_changed(self, small: np.ndarray) -> bool:
        if self._reference is None or self._outside is None or self._outside_n == 0:
            return False
        diff = cv2.absdiff(small, self._reference)
        changed = np.count_nonzero((diff > self.settings.change_level) & self._outside)
        return bool(changed > self.settings.change_fraction * self._outside_n)

    def _moving_hull(
        self, samples: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(hull points, filled hull mask, temporal range) of the largest moving component of
        `samples` (small frames), or None when nothing large enough moves."""
        s = self.settings
        stack = np.stack(samples)
        spread = stack.max(axis=0) - stack.min(axis=0)
        level = max(float(s.motion_level), s.noise_factor * noise_floor(stack, spread))
        moving = (spread > level).astype(np.uint8)
        sh, sw = moving.shape
        k = max(3, round(min(sh, sw) / 40) | 1)
        opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        closing = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, opening)
        moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, closing)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        if n < 2:
            return None  # nothing moves (a frozen image)
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[best, cv2.CC_STAT_AREA] < s.min_area * sh * sw:
            return None
        component = (labels == best).astype(np.uint8)
        contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.convexHull(np.concatenate(contours))
        hull = cv2.approxPolyDP(hull, 0.75, True).reshape(-1, 2).astype(np.float64)
        return hull, polygon_mask(tuple(map(tuple, hull)), sh, sw), spread

    def _detect(self, shape: tuple[int, int]) -> None:
        s = self.settings
        found = self._moving_hull(list(self.ring))
        if found is None:
            return  # keep what we have
        hull, small_mask, spread = found
        recent = s.min_frames + 2
        if len(self.ring) > recent:
            # the newest samples alone cover nearly all of the window's region (>= 0.96 on real
            # cines); much less means the image shrank (a depth change): forget the older ones
            newest = self._moving_hull(list(self.ring)[-recent:])
            if newest is not None and (
                np.count_nonzero(newest[1] & small_mask)
                < s.shrink_coverage * np.count_nonzero(small_mask)
            ):
                hull, small_mask, spread = newest
                for _ in range(len(self.ring) - recent):
                    self.ring.popleft()
        h, w = shape
        fx = fy = self._step(w)
        # a small pixel (i, j) covers full pixels [i*f, (i+1)*f): map hull points outwards
        cx, cy = hull[:, 0].mean(), hull[:, 1].mean()
        px = np.where(hull[:, 0] >= cx, (hull[:, 0] + 1) * fx - 1, hull[:, 0] * fx)
        py = np.where(hull[:, 1] >= cy, (hull[:, 1] + 1) * fy - 1, hull[:, 1] * fy)
        px, py = np.clip(np.round(px), 0, w - 1), np.clip(np.round(py), 0, h - 1)
        polygon = tuple((float(x), float(y)) for x, y in zip(px, py, strict=True))
        if self.region is not None and self._region_small is not None:
            if iou(small_mask, self._region_small) >= s.keep_iou:
                self._set_reference(self._region_small, spread)
                return
            self.changes += 1
        self.region = Region("auto", polygon)
        self._set_reference(small_mask, spread)

    def _set_reference(self, region_small: np.ndarray, spread: np.ndarray) -> None:
        self._region_small = region_small
        # static pixels outside the region, with a margin (its own edge flickers with speckle)
        grown = cv2.dilate(region_small.astype(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
        self._outside = ~grown & (spread <= self.settings.static_level)
        self._outside_n = int(np.count_nonzero(self._outside))
        self._reference = self.ring[-1]
