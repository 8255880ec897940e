"""Per-frame records joined into frames: where each frame went, when, and how it ended.

Input is the frame log (`stream.framelog`): one record per (stage, frame) event. Records of one
frame, keyed by (stream, epoch, seq), are joined into a `FrameRecord` with one `Visit` per stage.
A frame tapped on a link instead (`add_link_header`) gets visits from its trace and ends at the
tap, which then plays the part of the render stage's handoff.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# drops that happen after the stage worked on the frame (the send failed): their time counts in
# the stage's `stage_ms`, as in the stage's own histogram
SEND_DROPS = ("no_consumer", "overflow", "shutdown")

Key = tuple[str, int, int]


@dataclass
class Visit:
    """One stage's work on one frame."""

    stage: str
    event: str  # "out" or "drop"
    start_ns: int
    end_ns: int
    reason: str = ""
    handoff_ns: int | None = None  # render stages (or a tap): when the frame was handed off

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def timed(self) -> bool:
        """Whether this visit is a sample of the stage's `stage_ms`."""
        return self.event == "out" or self.reason in SEND_DROPS


@dataclass
class FrameRecord:
    """Everything recorded about one captured frame."""

    stream: str
    epoch: int
    seq: int
    capture_ns: int
    deadline_ns: int
    visits: dict[str, Visit] = field(default_factory=dict)
    trace: list[tuple[str, int, int]] = field(default_factory=list)
    delivered_trace: list[tuple[str, int, int]] = field(default_factory=list)  # as handed off
    warmup: bool = False

    @property
    def key(self) -> Key:
        return (self.stream, self.epoch, self.seq)

    def handoffs(self) -> list[Visit]:
        return [v for v in self.visits.values() if v.handoff_ns is not None]

    @property
    def delivered(self) -> bool:
        return bool(self.handoffs())

    @property
    def glass_ms(self) -> float | None:
        h = self.handoffs()
        return None if not h else (h[0].handoff_ns - self.capture_ns) / 1e6  # type: ignore[operator]

    @property
    def budget_miss(self) -> bool:
        return any(v.handoff_ns > self.deadline_ns for v in self.handoffs())  # type: ignore[operator]

    def drop(self) -> Visit | None:
        """The visit that dropped the frame (None if it was delivered or never dropped)."""
        if self.delivered:
            return None
        drops = [v for v in self.visits.values() if v.event == "drop"]
        return min(drops, key=lambda v: v.end_ns) if drops else None

    def path(self) -> list[Visit]:
        """The visits along the way the frame was delivered (the stages in the trace it was
        handed off with, then the stage that handed it off), else all visits in time order."""
        handoffs = self.handoffs()
        if handoffs and self.delivered_trace:
            on_path = [self.visits[s] for s, _, _ in self.delivered_trace if s in self.visits]
            return [v for v in on_path if v.handoff_ns is None] + handoffs[:1]
        return sorted(self.visits.values(), key=lambda v: (v.start_ns, v.end_ns))


class RecordError(ValueError):
    """A frame-log record that is not what `stream.framelog` writes."""


def _int(raw: dict, key: str) -> int:
    v = raw.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise RecordError(f"record field {key!r} must be an integer >= 0")
    return v


def _str(raw: dict, key: str) -> str:
    v = raw.get(key)
    if not isinstance(v, str) or len(v) > 256:
        raise RecordError(f"record field {key!r} must be a string")
    return v


def _trace(raw: Any) -> list[tuple[str, int, int]]:
    if not isinstance(raw, list):
        raise RecordError("record field 'trace' must be a list")
    out = []
    for s in raw:
        if not (
            isinstance(s, list)
            and len(s) == 3
            and isinstance(s[0], str)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in s[1:])
        ):
            raise RecordError("a trace span must be [stage, start_ns, end_ns]")
        out.append((s[0], s[1], s[2]))
    return out


class FrameTable:
    """Frames by key, built from records as they arrive. Bad records are counted, not raised."""

    def __init__(self) -> None:
        self.frames: dict[Key, FrameRecord] = {}
        self.invalid = 0
        self.events: Counter[tuple[str, str]] = Counter()  # (stage, event) -> records

    def _frame(
        self, stream: str, epoch: int, seq: int, capture_ns: int, deadline_ns: int
    ) -> FrameRecord:
        key = (stream, epoch, seq)
        f = self.frames.get(key)
        if f is None:
            f = self.frames[key] = FrameRecord(stream, epoch, seq, capture_ns, deadline_ns)
        return f

    def add_json(self, body: bytes) -> None:
        try:
            raw = json.loads(body)
            if not isinstance(raw, dict):
                raise RecordError("record is not a JSON object")
            self.add(raw)
        except (ValueError, RecordError):
            self.invalid += 1

    def add(self, raw: dict[str, Any]) -> None:
        """Add one frame-log record (raises RecordError if it is malformed)."""
        if raw.get("v") != 1:
            raise RecordError(f"record version {raw.get('v')!r} is not 1")
        event = _str(raw, "event")
        if event not in ("out", "drop"):
            raise RecordError(f"unknown event {event!r}")
        stage = _str(raw, "stage")
        f = self._frame(
            _str(raw, "stream"),
            _int(raw, "epoch"),
            _int(raw, "seq"),
            _int(raw, "capture_ns"),
            _int(raw, "deadline_ns"),
        )
        handoff = raw.get("handoff_ns")
        if handoff is not None and (not isinstance(handoff, int) or isinstance(handoff, bool)):
            raise RecordError("record field 'handoff_ns' must be an integer")
        reason = _str(raw, "reason") if event == "drop" else ""
        start, end = _int(raw, "start_ns"), _int(raw, "end_ns")
        f.visits[stage] = Visit(stage, event, start, end, reason, handoff)
        trace = _trace(raw.get("trace", []))
        if len(trace) > len(f.trace):
            f.trace = trace
        if handoff is not None:
            f.delivered_trace = trace
        self.events[(stage, event)] += 1

    def add_link_header(self, header: dict[str, Any], tap: str, received_ns: int) -> None:
        """A frame seen on a tapped link: visits from its trace spans, handed off at the tap."""
        if header.get("kind") != "frame":
            return
        try:
            key = (_str(header, "stream"), _int(header, "epoch"), _int(header, "seq"))
            times = (_int(header, "capture_ns"), _int(header, "deadline_ns"))
            trace = _trace(header.get("trace", []))
        except RecordError:
            self.invalid += 1
            return
        self.add_trace(*key, *times, trace, tap, received_ns)

    def add_trace(
        self,
        stream: str,
        epoch: int,
        seq: int,
        capture_ns: int,
        deadline_ns: int,
        trace: list[tuple[str, int, int]],
        end_stage: str,
        end_ns: int,
    ) -> None:
        """A frame known by its trace (a tapped link, a recording): one visit per span, and
        `end_stage` handing it off at `end_ns`."""
        f = self._frame(stream, epoch, seq, capture_ns, deadline_ns)
        for stage, start, end in trace:
            f.visits.setdefault(stage, Visit(stage, "out", start, end))
        f.visits[end_stage] = Visit(end_stage, "out", end_ns, end_ns, handoff_ns=end_ns)
        f.trace = f.delivered_trace = list(trace)
        self.events[(end_stage, "out")] += 1

    def ordered(self) -> list[FrameRecord]:
        """Frames in capture order."""
        return sorted(self.frames.values(), key=lambda f: (f.capture_ns, f.stream, f.seq))

    def mark_warmup(self, n: int) -> None:
        """Flag the first `n` captured frames of each stream as warm-up."""
        seen: Counter[str] = Counter()
        for f in self.ordered():
            f.warmup = seen[f.stream] < n
            seen[f.stream] += 1
