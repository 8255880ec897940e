"""Per-frame records for the profiler: what each stage did with each frame, and when.

Every stage connects an XPUB socket to the config's `frame_log` endpoint; a profiler binds a SUB
socket there. The XPUB sees the profiler's subscription, and until one arrives (and after it
leaves) `out`/`drop` return at once without encoding anything, so the log costs nothing when
nobody profiles. Records are sent without blocking; a record a full queue refuses is not
sent, and the profiler counts the gap from the stage's `out` counter.

A record is one single-part message, a compact UTF-8 JSON object:

    {"v": 1, "stage": ID, "pid": PID, "event": "out" | "drop", "stream": S, "epoch": E,
     "seq": N, "capture_ns": T, "deadline_ns": T, "start_ns": T, "end_ns": T,
     "trace": [[stage, start_ns, end_ns], ...], "reason": R, "handoff_ns": T, "budget_miss": B}

- `out`: the stage handed the frame on (the render stage: to its sinks). `start_ns`..`end_ns` is
  the time the stage spent on it, the same interval as its `stage_ms` histogram; `trace` is the
  frame's trace as it left. The render stage adds `handoff_ns` (glass-to-glass is
  `handoff_ns - capture_ns`, the value of its `glass_to_glass_ms` histogram) and `budget_miss`.
- `drop`: the stage dropped the frame; `reason` is the drop reason counted in its stats, and
  `end_ns` when it decided.
"""

from __future__ import annotations

import json
import os
from typing import Any

import zmq

from .frame import Frame
from .transport import count_subscriptions

VERSION = 1
SNDHWM = 10_000


class FrameLog:
    """One stage's frame log. With an empty endpoint every call is a no-op."""

    def __init__(self, ctx: zmq.Context, endpoint: str, stage_id: str):
        self.stage_id = stage_id
        self.pid = os.getpid()
        self.listeners = 0
        self.sock: zmq.Socket | None = None
        if endpoint:
            self.sock = ctx.socket(zmq.XPUB)
            self.sock.setsockopt(zmq.SNDHWM, SNDHWM)
            self.sock.setsockopt(zmq.LINGER, 500)
            self.sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a profiler not connected
            self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)
            self.sock.connect(endpoint)

    def active(self) -> bool:
        """Whether a profiler listens (checks its (un)subscriptions without blocking)."""
        if self.sock is None:
            return False
        self.listeners = count_subscriptions(self.sock, self.listeners)
        return self.listeners > 0

    def _send(self, record: dict[str, Any]) -> None:
        assert self.sock is not None
        try:
            self.sock.send(json.dumps(record, separators=(",", ":")).encode(), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the profiler counts the gap from the stage's `out` counter

    def _record(self, frame: Frame, event: str, start_ns: int, end_ns: int) -> dict[str, Any]:
        return {
            "v": VERSION,
            "stage": self.stage_id,
            "pid": self.pid,
            "event": event,
            "stream": frame.stream,
            "epoch": frame.epoch,
            "seq": frame.seq,
            "capture_ns": frame.capture_ns,
            "deadline_ns": frame.deadline_ns,
            "start_ns": start_ns,
            "end_ns": end_ns,
            "trace": [[s.stage, s.start_ns, s.end_ns] for s in frame.trace],
        }

    def out(self, frame: Frame, start_ns: int, end_ns: int, handoff_ns: int | None = None) -> None:
        """The stage handed `frame` on after working on it from `start_ns` to `end_ns`."""
        if not self.active():
            return
        record = self._record(frame, "out", start_ns, end_ns)
        if handoff_ns is not None:
            record["handoff_ns"] = handoff_ns
            record["budget_miss"] = handoff_ns > frame.deadline_ns
        self._send(record)

    def drop(self, frame: Frame, reason: str, start_ns: int, end_ns: int) -> None:
        """The stage dropped `frame` for `reason` (as counted in its stats)."""
        if not self.active():
            return
        record = self._record(frame, "drop", start_ns, end_ns)
        record["reason"] = reason
        self._send(record)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
