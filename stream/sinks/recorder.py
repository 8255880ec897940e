"""RecorderSink: a lossless recording of the original frames (every part, the annotations and
the trace) in the `.msrec` format (docs/recording.md), which the `replay` source reads back.

`write` only queues the frame for a writer thread and never waits: a frame that finds the queue
full is dropped and counted (`sink_overflow`), unless `wait: true`, meant for a render stage that
does nothing but record on a lossless link, where waiting is what keeps every frame. The rendered
image is stored too (as part `rendered`, bgr8) only with `rendered: true`.

The file is created at open (so a bad path is an error at once); its header is written with the
first frame, whose `meta["source_fps"]` (the grab stage's rate) becomes the header's `source_fps`
unless the sink was opened with one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from stream.frame import Frame
from stream.recording import RecordingWriter
from stream.sinks.base import SinkBase, SinkError, frame_source_fps
from stream.sinks.writer_thread import CLOSE_TIMEOUT_S, WriterFailed, WriterThread
from stream.spec import ConfigError, bounded


@dataclass
class RecorderSpec:
    """Config of a `recorder` sink."""

    path: str = bounded(
        "", doc="recording file (.msrec); {stage} and {start} (start time) are expanded"
    )
    overwrite: bool = bounded(False, doc="replace an existing file (else: an error at open)")
    rendered: bool = bounded(False, doc="also store the rendered image (part 'rendered', bgr8)")
    queue: int = bounded(64, 1, 100_000, doc="frames waiting for the writer; more are dropped")
    wait: bool = bounded(
        False, doc="wait for room instead of dropping (only for a record-only stage)"
    )
    fsync_s: float = bounded(
        1.0, 0.0, 3600.0, doc="fsync at least this often (0: every frame); see docs/recording.md"
    )

    def validate(self, where: str) -> None:
        if not self.path:
            raise ConfigError(f"{where}.path: expected a file path, got ''")
        try:
            self.path.format(stage="s", start="t")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"{where}.path: only {{stage}} and {{start}} can be expanded ({e})"
            ) from None


class RecorderSink(SinkBase):
    """Queue frames for a writer thread that appends them to the recording (see module doc)."""

    kind = "recorder"

    def __init__(self, spec: RecorderSpec, stage_id: str, source_fps: float | None = None) -> None:
        super().__init__(stage_id, source_fps)
        self.spec = spec
        start = datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
        self.path = Path(spec.path.format(stage=stage_id, start=start))
        self.frames_queued = 0
        self.frames_written = 0
        self._open()
        self._writer: RecordingWriter | None = None  # made by the first frame (or close)
        self._thread = WriterThread(f"recorder-{stage_id}", spec.queue, self._write_item)

    def _fail(self, why: str) -> SinkError:
        return SinkError(f"{self.who}: cannot write {self.path}: {why}")

    def _open(self) -> None:
        """Create the (empty) file now, so a path that cannot be written is an error at open."""
        if self.path.exists() and not self.spec.overwrite:
            raise self._fail("the file exists (set overwrite: true, or put {start} in the path)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.open("wb").close()
        except OSError as e:
            raise self._fail(e.strerror or str(e)) from None
        self.created_ns = time.time_ns()

    def _recording(self) -> RecordingWriter:
        """The writer, made (with the file header) on first use."""
        if self._writer is None:
            header = {
                "stage": self.stage_id,
                "created_ns": self.created_ns,
                "source_fps": self.source_fps,
                "rendered": self.spec.rendered,
                "fsync_s": self.spec.fsync_s,
            }
            self._writer = RecordingWriter(self.path, header, self.spec.fsync_s)
        return self._writer

    def _write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Queue `frame` (and the rendered image, if configured). Never waits unless `wait`."""
        if self.source_fps is None and self.frames_queued == 0:  # before the writer reads it
            self.source_fps = frame_source_fps(frame)
        item = (frame, image_bgr if self.spec.rendered else None, time.time_ns())
        if self._thread.error is not None:
            self._thread.drop("writer_error")
            return
        if self._thread.put(item, wait=self.spec.wait):
            self.frames_queued += 1

    def pending(self) -> int:
        """Frames handed to this sink and not yet written."""
        return self._thread.pending()

    def drops(self) -> dict[str, int]:
        return self._thread.drops()

    def _record(self, frame: Frame, rendered: np.ndarray | None, recorded_ns: int) -> None:
        if rendered is not None:
            frame = replace(frame, parts={**frame.parts, "rendered": rendered})
        self._recording().write_frame(frame, self.stage_id, recorded_ns)
        self.frames_written += 1

    def _write_item(self, item: tuple[Frame, np.ndarray | None, int]) -> None:
        try:
            self._record(*item)
        except (TypeError, ValueError):  # a frame the codec cannot encode (dtype, parts)
            self._thread.drop("encode_error")
        except OSError as e:  # disk full, I/O error: stop writing, count the rest
            raise WriterFailed(e.strerror or str(e)) from e

    def _close(self) -> None:
        """Write every queued frame and the end record (with the latest stats), then close
        the file (bounded). Raises SinkError if writing failed (the frames lost are counted
        as `writer_error`)."""
        if not self._thread.stop():
            raise self._fail(f"the writer did not finish within {CLOSE_TIMEOUT_S:.0f} s")
        error = self._thread.error
        try:
            if error is None:
                info = {
                    "frames": self.frames_written,
                    "drops": self.drops(),
                    "stats": self.latest_stats,
                }
                self._recording().write_end(info, time.time_ns())
            if self._writer is not None:
                self._writer.close()
        except OSError as e:
            error = error or e.strerror or str(e)
        if error is not None:
            raise self._fail(error)
