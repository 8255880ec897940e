"""What every sink (where rendered frames go) offers the render stage."""

from __future__ import annotations

import json
import math
import threading
from typing import Any, Protocol

import numpy as np

from stream.frame import Frame

MAX_FPS = 1000.0


class SinkError(RuntimeError):
    """A sink that cannot open: the message says what, where and why, in one line."""


class Sink(Protocol):
    """A consumer of rendered frames. Calls come from the render stage's one thread."""

    def write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Hand off a rendered BGR image (which the sink may keep; the caller must not modify
        it afterwards) and the frame it came from. Returns at once: never waits on disk,
        network or clients; what the sink cannot take is dropped and counted in `drops`."""
        ...

    def update_stats(self, stats: dict[str, Any]) -> None:
        """Live stats to show or record (a JSON-able dict; replaces the previous one)."""
        ...

    def drops(self) -> dict[str, int]:
        """Frames this sink itself dropped, by reason."""
        ...

    def close(self) -> None:
        """Finish (flush files, stop servers, join threads). Safe to call twice."""
        ...


class SinkBase:
    """What every bundled sink shares: its stage id and name in messages (`who`), the checked
    source rate, the closed state, the latest stats and drops counted by reason. A sink
    implements `_write` (called only while open) and, if it holds resources, `_close`."""

    kind = "sink"  # its config `type:`, in messages

    def __init__(self, stage_id: str, source_fps: float | None = None) -> None:
        self.who = f"{self.kind} sink {stage_id!r}"
        check_source_fps(source_fps, self.who)
        self.stage_id = stage_id
        self.source_fps = source_fps
        self.latest_stats: dict[str, Any] = {}
        self.closed = False
        self._drops: dict[str, int] = {}
        self._drops_lock = threading.Lock()

    def write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """See `Sink.write`; a RuntimeError once the sink is closed."""
        if self.closed:
            raise RuntimeError(f"{self.who} is closed")
        self._write(image_bgr, frame)

    def _write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        raise NotImplementedError

    def update_stats(self, stats: dict[str, Any]) -> None:
        """Keep the latest stats (`latest_stats`, a JSON copy; replaced whole, never edited)."""
        self.latest_stats = json_snapshot(stats, self.who)

    def drop(self, reason: str) -> None:
        """Count one frame this sink dropped."""
        with self._drops_lock:
            self._drops[reason] = self._drops.get(reason, 0) + 1

    def drops(self) -> dict[str, int]:
        with self._drops_lock:
            return dict(self._drops)

    def pending(self) -> int:
        """Frames taken and not finished with (a file sink's queue)."""
        return 0

    def close(self) -> None:
        """Finish (`_close`) once; safe to call twice."""
        if not self.closed:
            self.closed = True
            self._close()

    def _close(self) -> None:
        pass


def sink_pending(sink: Sink) -> int:
    """Frames a sink took and has not finished with (a file sink's queue); 0 for sinks that
    keep only the newest frame and owe nothing (viewer, window, OpenIGTLink)."""
    pending = getattr(sink, "pending", None)
    return pending() if pending is not None else 0


def sink_display_ms(sink: Sink) -> list[tuple[str, float]]:
    """Capture -> shown latencies a sink's viewers reported since the last call, as (stream,
    ms); [] for sinks that show nothing themselves."""
    take = getattr(sink, "take_display_ms", None)
    return take() if take is not None else []


def frame_source_fps(frame: Frame) -> float | None:
    """The stream's frame rate the grab stage put in `meta["source_fps"]`, if valid."""
    value = frame.meta.get("source_fps")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and 0 < value <= MAX_FPS:
            return float(value)
    return None


def json_snapshot(stats: dict[str, Any], who: str) -> dict[str, Any]:
    """A deep copy of `stats` through JSON; ValueError naming `who` if it is not JSON-able."""
    try:
        return json.loads(json.dumps(stats, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{who}: stats must be JSON-able: {e}") from None


def check_source_fps(source_fps: float | None, who: str) -> None:
    """ValueError unless `source_fps` is None or a finite rate > 0."""
    if source_fps is not None and not (math.isfinite(source_fps) and source_fps > 0):
        raise ValueError(f"{who}: source_fps must be a finite rate > 0 or None, got {source_fps}")


def check_bgr_image(image: np.ndarray, who: str) -> None:
    """ValueError naming `who` unless `image` is a uint8 H x W x 3 (BGR) array."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{who}: expected a uint8 HxWx3 BGR image, got {image.dtype} {image.shape}"
        )
