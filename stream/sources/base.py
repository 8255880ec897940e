"""What every source (grabber) gives the grab stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream.frame import Annotations


@dataclass
class Capture:
    """One image read from a source, before it becomes a `Frame`.

    `parts` are extra arrays to send with the image (e.g. `truth`: a ground-truth label map);
    `meta` small JSON values (e.g. `pixel_spacing_mm: [row_mm, col_mm]`, see stream.geometry);
    `annotations` what a model said about it, if the source knows (a replayed recording).
    """

    image: np.ndarray
    pixel_format: str
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    annotations: Annotations = field(default_factory=Annotations)


@dataclass(frozen=True)
class SourceEvent:
    """Something the grab stage logs (one line; "" logs nothing) and counts: a stall, a gap."""

    message: str
    counts: dict[str, int] = field(default_factory=dict)
    level: str = "warning"  # "info" or "warning"


class EventLog:
    """What a source noted since the grab stage last took its events (`pop_events`)."""

    def __init__(self) -> None:
        self._events: list[SourceEvent] = []

    def _event(
        self, message: str, counts: dict[str, int] | None = None, level: str = "warning"
    ) -> None:
        self._events.append(SourceEvent(message, counts or {}, level))

    def pop_events(self) -> list[SourceEvent]:
        events, self._events = self._events, []
        return events


class SourceError(RuntimeError):
    """A source that cannot open or read: the message says what, where and why, in one line."""


class Source(Protocol):
    """A frame source. The grab stage paces calls to `read` at the configured rate.

    Optional attributes the grab stage looks for (with getattr):

    - `self_paced: bool` - True when `read` itself returns when the next frame is due (a live
      device delivering at its own rate, a replay at its recorded timing, a file read as fast as
      possible). The grab stage then does not pace, unless its own `fps` is set, in which case it
      paces at that rate as well (the slower of the two wins).
    - `should_stop` - a `Callable[[], bool]` attribute the grab stage replaces with its stop
      flag; a source whose `read` may block checks it at least every 100 ms and returns None
      once it is true.
    - `pop_events() -> list[SourceEvent]` - called after each read: what to log and count.
    """

    fps: float | None  # the source's own frame rate, if it has one (files, DICOM cines)

    def read(self) -> Capture | None:
        """Return the next image (fresh arrays: they are sent without copying), or None at the
        end of a finite source."""
        ...

    def close(self) -> None: ...


def never_stop() -> bool:
    """The default `should_stop` of a source that is not run by a grab stage."""
    return False


def one_line(text: str) -> str:
    """`text` as one line (exception texts from libraries may span several)."""
    return " ".join(str(text).split()) or "unknown error"
