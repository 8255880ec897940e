"""VideoSink: write rendered frames to a video file from a writer thread."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.frame import Frame
from stream.sinks.base import SinkError, check_source_fps, json_snapshot
from stream.spec import ConfigError, bounded

DEFAULT_FPS = 30.0
CLOSE_TIMEOUT_S = 120.0  # close() gives the writer this long to drain its queue


@dataclass
class VideoSpec:
    """Config of a `video` sink."""

    path: str
    fps: float | None = bounded(
        None, 0.1, 1000.0, doc="frame rate written in the file; null: the source's, else 30"
    )
    fourcc: str = "mp4v"
    queue: int = bounded(64, 1, 10_000, doc="frames waiting for the writer; more are dropped")

    def validate(self, where: str) -> None:
        if not self.path:
            raise ConfigError(f"{where}.path: expected a file path, got ''")
        if len(self.fourcc) != 4 or not self.fourcc.isascii():
            raise ConfigError(
                f"{where}.fourcc: expected 4 ASCII characters (e.g. 'mp4v'), got {self.fourcc!r}"
            )


_STOP = object()


class VideoSink:
    """Queue frames for a writer thread; `write` never waits on the encoder or the disk.

    The first frame fixes the video size: later frames of another size are dropped as
    `bad_size`; frames that find the queue full are dropped as `sink_overflow`. An existing
    file at `path` is replaced.
    """

    def __init__(self, spec: VideoSpec, stage_id: str, source_fps: float | None = None) -> None:
        check_source_fps(source_fps, f"video sink {stage_id!r}")
        self.spec = spec
        self.stage_id = stage_id
        self.path = Path(spec.path)
        self.fps = spec.fps or source_fps or DEFAULT_FPS
        self._fourcc = cv2.VideoWriter_fourcc(*spec.fourcc)
        self._check_writable()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=spec.queue)
        self._lock = threading.Lock()
        self._drops: dict[str, int] = {}
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._error: str | None = None
        self.frames_written = 0
        self.stats: dict[str, Any] = {}
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=f"video-{stage_id}", daemon=True)
        self._thread.start()

    def _fail(self, why: str) -> SinkError:
        return SinkError(f"video sink {self.stage_id!r}: cannot write {self.path}: {why}")

    def _check_writable(self) -> None:
        """Create the parent directory and open a writer once, so a bad path, permission or
        codec is an error now rather than a lost recording later."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._fail(f"cannot create its directory ({e.strerror or e})") from None
        if self.path.is_dir():
            raise self._fail("it is a directory")
        if not os.access(self.path.parent, os.W_OK):
            raise self._fail("its directory is not writable")
        existed = self.path.exists()
        probe = cv2.VideoWriter(str(self.path), self._fourcc, self.fps, (64, 64))
        opened = probe.isOpened()
        probe.release()
        if not existed and self.path.exists():
            self.path.unlink()  # the real file is made by the first frame
        if not opened:
            raise self._fail(
                f"OpenCV cannot open a {self.spec.fourcc!r} video writer for it "
                "(unsupported codec or container, or the file is not writable)"
            )

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._drops[reason] = self._drops.get(reason, 0) + 1

    def write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Queue `image_bgr` (kept by reference) for the writer, or count why it was dropped."""
        if self.closed:
            raise RuntimeError(f"video sink {self.stage_id!r} is closed")
        if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(
                f"video sink {self.stage_id!r}: expected a uint8 HxWx3 BGR image, "
                f"got {image_bgr.dtype} {image_bgr.shape}"
            )
        size = (image_bgr.shape[1], image_bgr.shape[0])
        if self._size is None:
            self._size = size
        elif size != self._size:
            self._drop("bad_size")
            return
        try:
            self._queue.put_nowait(image_bgr)
        except queue.Full:
            self._drop("sink_overflow")

    def update_stats(self, stats: dict[str, Any]) -> None:
        """Keep the latest stats (`self.stats`); they are not written into the video."""
        self.stats = json_snapshot(stats, f"video sink {self.stage_id!r}")

    def drops(self) -> dict[str, int]:
        with self._lock:
            return dict(self._drops)

    def _run(self) -> None:
        writer: cv2.VideoWriter | None = None
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if self._error is not None:
                self._drop("writer_error")
                continue
            try:
                if writer is None:
                    height, width = item.shape[:2]
                    writer = cv2.VideoWriter(
                        str(self.path), self._fourcc, self.fps, (width, height)
                    )
                    if not writer.isOpened():
                        raise OSError(f"OpenCV could not open the writer at {width}x{height}")
                writer.write(np.ascontiguousarray(item))
                self.frames_written += 1
            except Exception as e:  # the thread must live on to count and drain
                self._error = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                self._drop("writer_error")
        if writer is not None:
            writer.release()

    def close(self) -> None:
        """Write every queued frame, finish the file and join the writer thread.

        Raises SinkError if the writer failed (its frames are counted as `writer_error`).
        Safe to call twice.
        """
        if self.closed:
            return
        self.closed = True
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        try:
            self._queue.put(_STOP, timeout=CLOSE_TIMEOUT_S)  # room comes as the writer drains
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            raise self._fail(f"the writer did not finish within {CLOSE_TIMEOUT_S:.0f} s")
        if self._error is not None:
            raise self._fail(self._error)
