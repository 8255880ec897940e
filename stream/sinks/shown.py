"""ShownReports: display latency from the viewer page's "this frame is on screen now" reports.

The page POSTs `/shown` with `{"stream": ID, "seq": N, "shown_ms": T}` once a frame it fetched
is on screen, T being the browser's `performance.timeOrigin + performance.now()` (wall clock, ms
since the epoch). The sink remembers the capture time of every frame it served (the newest
`MAX_SERVED`), so display latency = T - capture, both wall clocks: exact on the same host,
as good as the hosts' clock sync (NTP/PTP) otherwise.

A report is taken once per served frame. Refused and counted (never an exception): a body too
large or not JSON, missing or mistyped fields (`invalid`), a frame not served or already
reported (`unknown_frame`), a shown time before the capture beyond the clock tolerance
(`clock_skew`) or over `MAX_DISPLAY_MS` (`implausible`), and reports over `max_per_s`
(`rate`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter, OrderedDict, deque

from stream.clock import CLOCK_TOLERANCE_MS

MAX_BODY_BYTES = 512
MAX_SERVED = 512  # frames remembered (per sink, all streams) until their report comes
MAX_DISPLAY_MS = 60_000.0
MAX_PENDING = 4096  # latencies kept until the render stage takes them


class ShownReports:
    """Thread-safe: `served` from HTTP handler threads, `report` too, `take` from the stage."""

    def __init__(self, max_per_s: float = 240.0) -> None:
        self.max_per_s = max_per_s
        self._lock = threading.Lock()
        self._served: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._pending: deque[tuple[str, float]] = deque(maxlen=MAX_PENDING)  # (stream, ms)
        self._refused: Counter[str] = Counter()
        self._accepted = 0
        self._tokens = max_per_s
        self._refill_at = time.monotonic()

    def served(self, stream: str, seq: int, capture_ns: int) -> None:
        """A frame went out to a page: remember when it was captured."""
        with self._lock:
            self._served[(stream, seq)] = capture_ns
            self._served.move_to_end((stream, seq))
            while len(self._served) > MAX_SERVED:
                self._served.popitem(last=False)

    def report(self, body: bytes) -> str:
        """Take one POSTed report; returns "" if accepted, else the refusal reason (counted)."""
        with self._lock:
            reason = self._check(body)
            if reason:
                self._refused[reason] += 1
            return reason

    def refuse(self, reason: str) -> None:
        """Count a report refused before its body was read (too large, no length)."""
        with self._lock:
            self._refused[reason] += 1

    def _check(self, body: bytes) -> str:
        now = time.monotonic()
        self._tokens = min(self.max_per_s, self._tokens + (now - self._refill_at) * self.max_per_s)
        self._refill_at = now
        if self._tokens < 1:
            return "rate"
        self._tokens -= 1
        if len(body) > MAX_BODY_BYTES:
            return "too_large"
        try:
            msg = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return "invalid"
        if not isinstance(msg, dict):
            return "invalid"
        stream, seq, shown = msg.get("stream"), msg.get("seq"), msg.get("shown_ms")
        if (
            not isinstance(stream, str)
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or not isinstance(shown, (int, float))
            or isinstance(shown, bool)
            or not math.isfinite(shown)
        ):
            return "invalid"
        capture_ns = self._served.pop((stream, seq), None)
        if capture_ns is None:
            return "unknown_frame"
        ms = shown - capture_ns / 1e6
        if ms < -CLOCK_TOLERANCE_MS:
            return "clock_skew"
        if ms > MAX_DISPLAY_MS:
            return "implausible"
        self._pending.append((stream, max(0.0, ms)))
        self._accepted += 1
        return ""

    def take(self) -> list[tuple[str, float]]:
        """The display latencies accepted since the last call: (stream, ms) each."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
            return out

    def counts(self) -> dict[str, object]:
        with self._lock:
            return {"accepted": self._accepted, "refused": dict(self._refused)}
