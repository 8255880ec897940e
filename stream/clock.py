"""Injected clocks: every decision that depends on time asks a `Clock`, so tests can fake it."""

from __future__ import annotations

import time
from typing import Protocol

# A receiving host whose clock reads more than this before the sender's stamp counts the frame
# as `clock_skew` (its age cannot be trusted) instead of recording a negative latency.
CLOCK_TOLERANCE_MS = 5.0


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall-clock time in nanoseconds since the epoch (comparable across processes)."""
        ...

    def sleep_until_ns(self, t_ns: int) -> None:
        """Block until `now_ns() >= t_ns` (returns at once if already past)."""
        ...


class WallClock:
    """The real clock: `time.time_ns`, shared by every process on a host (and by hosts whose
    clocks are synchronised with NTP/PTP)."""

    def now_ns(self) -> int:
        return time.time_ns()

    def sleep_until_ns(self, t_ns: int) -> None:
        delay = (t_ns - time.time_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)


class FakeClock:
    """A clock that only moves when told to: `advance_ms`, or `sleep_until_ns` jumping ahead."""

    def __init__(self, start_ns: int = 1_000_000_000_000):
        self.t_ns = start_ns

    def now_ns(self) -> int:
        return self.t_ns

    def advance_ms(self, ms: float) -> None:
        self.t_ns += int(ms * 1e6)

    def sleep_until_ns(self, t_ns: int) -> None:
        self.t_ns = max(self.t_ns, t_ns)
