"""VideoSink: write rendered frames to a video file from a writer thread."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.frame import Frame
from stream.sinks.base import SinkBase, SinkError, check_bgr_image, frame_source_fps
from stream.sinks.writer_thread import CLOSE_TIMEOUT_S, WriterFailed, WriterThread
from stream.spec import ConfigError, bounded

DEFAULT_FPS = 30.0


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


class VideoSink(SinkBase):
    """Queue frames for a writer thread; `write` never waits on the encoder or the disk.

    The frame rate written is `spec.fps`, else `source_fps` given at open, else the first
    frame's `meta["source_fps"]` (the grab stage's rate), else 30. The first frame fixes the
    video size: later frames of another size are dropped as
    `bad_size`; frames that find the queue full are dropped as `sink_overflow`. An existing
    file at `path` is replaced.
    """

    kind = "video"

    def __init__(self, spec: VideoSpec, stage_id: str, source_fps: float | None = None) -> None:
        super().__init__(stage_id, source_fps)
        self.spec = spec
        self.path = Path(spec.path)
        self.fps = spec.fps or source_fps or DEFAULT_FPS
        self._fps_known = bool(spec.fps or source_fps)
        self._fourcc = cv2.VideoWriter_fourcc(*spec.fourcc)  # type: ignore[attr-defined]  # in cv2, not in its stub
        self._check_writable()
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._video: cv2.VideoWriter | None = None  # opened by the first frame
        self.frames_written = 0
        self._thread = WriterThread(
            f"video-{stage_id}", spec.queue, self._write_item, self._release
        )

    def _fail(self, why: str) -> SinkError:
        return SinkError(f"{self.who}: cannot write {self.path}: {why}")

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

    def _write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Queue `image_bgr` (kept by reference) for the writer, or count why it was dropped."""
        check_bgr_image(image_bgr, self.who)
        size = (image_bgr.shape[1], image_bgr.shape[0])
        if self._size is None:
            self._size = size
            if not self._fps_known:  # set before the first put: the writer thread reads it
                self.fps = frame_source_fps(frame) or DEFAULT_FPS
                self._fps_known = True
        elif size != self._size:
            self._thread.drop("bad_size")
            return
        self._thread.put(image_bgr)

    def pending(self) -> int:
        """Frames handed to this sink and not yet written."""
        return self._thread.pending()

    def drops(self) -> dict[str, int]:
        return self._thread.drops()

    def _write_item(self, image: np.ndarray) -> None:
        try:
            if self._video is None:
                height, width = image.shape[:2]
                self._video = cv2.VideoWriter(
                    str(self.path), self._fourcc, self.fps, (width, height)
                )
                if not self._video.isOpened():
                    raise OSError(f"OpenCV could not open the writer at {width}x{height}")
            self._video.write(np.ascontiguousarray(image))
            self.frames_written += 1
        except Exception as e:  # the thread must live on to count and drain
            raise WriterFailed((str(e).strip().splitlines() or [type(e).__name__])[-1]) from e

    def _release(self) -> None:
        if self._video is not None:
            self._video.release()

    def _close(self) -> None:
        """Write every queued frame, finish the file and join the writer thread.

        Raises SinkError if the writer failed (its frames are counted as `writer_error`)."""
        if not self._thread.stop():
            raise self._fail(f"the writer did not finish within {CLOSE_TIMEOUT_S:.0f} s")
        if self._thread.error is not None:
            raise self._fail(self._thread.error)
