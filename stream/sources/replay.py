"""Replay source: the frames of a recorder's `.msrec` file, with their original timing.

Frame i is released at t0 + (capture_i - capture_0) / speed (t0: the first read), so the
recorded intervals - jitter and gaps included - are reproduced; `speed: null` releases frames
as fast as they are read. The source paces itself: the grab stage adds no pacing unless its own
`fps` is set (then the slower of the two wins; use `speed: null` with a grab `fps` for a uniform
rate). With `annotations: true` the recorded masks (part `mask`), boxes and labels travel with
the frames, so a grab -> render graph redraws the recorded overlays without a model. A replay
that falls more than `MAX_LATE_S` behind its schedule (a slow disk) starts the schedule again
from the late frame, and says so, rather than bursting to catch up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stream.frame import Annotations, Frame
from stream.recording import RecordingError, RecordingReader
from stream.sources.base import Capture, EventLog, SourceError, never_stop
from stream.spec import ConfigError, bounded

WAIT_SLICE_S = 0.05
MAX_LATE_S = 0.1


@dataclass(frozen=True)
class ReplaySpec:
    """The `source:` section for `type: replay`."""

    path: str = bounded("", doc="a recording (.msrec) written by the recorder sink")
    speed: float | None = bounded(
        1.0, 0.01, 100.0, doc="1: recorded timing; 2: twice as fast; null: as fast as possible"
    )
    loop: bool = bounded(False, doc="start again after the last frame")
    annotations: bool = bounded(True, doc="send the recorded mask, boxes and labels along")
    image: Literal["original", "rendered"] = bounded(
        "original", doc="rendered: replay the stored rendered image (recorded with rendered: true)"
    )

    def validate(self, where: str) -> None:
        if not self.path:
            raise ConfigError(f"{where}.path: expected a recording file, got ''")


class ReplaySource(EventLog):
    """Frames of a recording at their recorded times (see the module doc)."""

    def __init__(self, spec: ReplaySpec) -> None:
        super().__init__()
        self.spec = spec
        self.path = Path(spec.path)
        if not self.path.exists():
            raise SourceError(f"replay source: cannot open {self.path}: no such file")
        try:
            self.reader = RecordingReader(self.path)
        except RecordingError as e:
            raise SourceError(f"replay source: cannot open {e}") from None
        n = len(self.reader)
        if n == 0:
            self.reader.close()
            raise SourceError(f"replay source: cannot open {self.path}: it holds no whole frame")
        if spec.image == "rendered" and not self.reader.header.get("rendered"):
            self.reader.close()
            raise SourceError(
                f"replay source: cannot open {self.path}: image: rendered, but it was recorded "
                "without rendered images (recorder rendered: false)"
            )
        self.self_paced = True
        self.should_stop = never_stop
        self.index = 0
        self.closed = False
        self._t0: float | None = None  # monotonic time of the schedule's anchor
        self._c0 = 0  # capture_ns of the frame at the anchor
        self.fps: float | None = self._recorded_rate()
        notes = []
        if self.reader.truncated_bytes:
            notes.append(f"{self.reader.truncated_bytes} bytes of a cut-short record ignored")
        if self.reader.end is None:
            notes.append("no end record (the recorder did not close normally)")
        for offset, length in self.reader.damaged:  # each held one record, or the tail of one
            self._event(
                f"replay source {self.path}: a damaged record at byte {offset}: skipped "
                f"{length} bytes to the next whole record",
                {"source_bad_records": 1},
            )
        self._event(
            f"replay source {self.path}: {n} frames"
            + (f", {self.fps:.2f} fps recorded" if self.fps else "")
            + ("; " + "; ".join(notes) if notes else ""),
            level="info",
        )

    def _recorded_rate(self) -> float | None:
        entries = self.reader.frames
        if len(entries) < 2:
            return None
        span_ns = entries[-1].recorded_ns - entries[0].recorded_ns
        return (len(entries) - 1) / (span_ns / 1e9) if span_ns > 0 else None

    def _wait_until(self, due: float) -> bool:
        """Sleep until monotonic `due` in slices; False if a stop was requested."""
        while True:
            if self.should_stop():
                return False
            left = due - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, WAIT_SLICE_S))

    def _next_frame(self) -> Frame | None:
        bad = 0
        while True:
            if self.index >= len(self.reader):
                if not self.spec.loop:
                    return None
                self.index = 0
                self._t0 = None  # the schedule starts again with the first frame
            i = self.index
            self.index += 1
            try:
                return self.reader.read_frame(i)
            except RecordingError as e:
                self._event(f"replay source: skipped: {e}", {"source_bad_records": 1})
                bad += 1
                if bad >= len(self.reader):
                    raise SourceError(
                        f"replay source {self.path}: no frame record is readable"
                    ) from None

    def read(self) -> Capture | None:
        if self.closed:
            raise SourceError(f"replay source {self.path}: read() after close()")
        frame = self._next_frame()
        if frame is None:
            return None
        speed = self.spec.speed
        if speed is not None:
            if self._t0 is None:
                self._t0, self._c0 = time.monotonic(), frame.capture_ns
            due = self._t0 + (frame.capture_ns - self._c0) / 1e9 / speed
            late = time.monotonic() - due
            if late > MAX_LATE_S:
                self._event(
                    f"replay source: {late * 1000:.0f} ms behind the recorded timing; "
                    "the schedule starts again from here",
                    {"source_behind": 1},
                )
                self._t0, self._c0 = time.monotonic(), frame.capture_ns
            elif not self._wait_until(due):
                return None
        parts = dict(frame.parts)
        rendered = parts.pop("rendered", None)
        image, fmt = frame.image, frame.pixel_format
        if self.spec.image == "rendered":
            if rendered is None:
                raise SourceError(
                    f"replay source {self.path}: frame {frame.seq} has no rendered image"
                )
            image, fmt = rendered, "bgr8"
        annotations = frame.annotations if self.spec.annotations else Annotations()
        if not self.spec.annotations:
            parts.pop("mask", None)
        meta = dict(frame.meta)
        meta["replay"] = {"stream": frame.stream, "seq": frame.seq, "capture_ns": frame.capture_ns}
        return Capture(image, fmt, parts=parts, meta=meta, annotations=annotations)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reader.close()
