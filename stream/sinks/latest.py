"""A latest-wins slot for the newest rendered frame, with its JPEG encoded lazily and shared."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Jpeg:
    """One encoded frame: `version` counts frames put into the slot (1 = the first)."""

    version: int
    seq: int
    data: bytes
    capture_ns: int = 0  # the frame's capture time (wall clock, ns)


class LatestJpeg:
    """Holds only the newest image; readers wait for one newer than what they have.

    `put` never waits for readers (it only swaps a reference under a lock held for
    microseconds). The JPEG of a version is encoded at most once, by the first reader that
    needs it, outside the lock, and shared by every reader; versions nobody asked for are never
    encoded.
    """

    def __init__(self, jpeg_quality: int) -> None:
        self._params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = -1
        self._capture_ns = 0
        self._version = 0
        self._jpeg: Jpeg | None = None
        self._encoding: int | None = None  # version being encoded right now, if any
        self._failed = 0  # newest version whose encoding failed: not retried
        self._closed = False
        self.encoded = 0
        self.encode_errors = 0

    def put(self, image: np.ndarray, seq: int, capture_ns: int = 0) -> None:
        """Make `image` the newest frame (the slot keeps a reference; no copy)."""
        with self._cond:
            self._image, self._seq, self._capture_ns = image, seq, capture_ns
            self._version += 1
            self._cond.notify_all()

    @property
    def version(self) -> int:
        return self._version

    def close(self) -> None:
        """Wake every waiting reader; later reads return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def next_jpeg(self, after: int, timeout_s: float) -> Jpeg | None:
        """The newest frame's JPEG once its version is > `after`; None on timeout or close."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._version > after and self._failed != self._version:
                    if self._jpeg is not None and self._jpeg.version == self._version:
                        return self._jpeg
                    if self._encoding != self._version:
                        break  # nobody is encoding the newest frame: this reader does it
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            version, seq, image, capture = self._version, self._seq, self._image, self._capture_ns
            self._encoding = version
        assert image is not None
        ok, buf = cv2.imencode(".jpg", image, self._params)
        with self._cond:
            if self._encoding == version:
                self._encoding = None
            self._cond.notify_all()
            if not ok:
                self.encode_errors += 1
                self._failed = version
                return None
            self.encoded += 1
            jpeg = Jpeg(version, seq, buf.tobytes(), capture)
            if self._jpeg is None or self._jpeg.version < version:
                self._jpeg = jpeg
            return jpeg
