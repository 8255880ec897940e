"""A live receiver's watchdog: rare looks while its stage waits in `recv`, a look every
BUSY_WATCH_S while a slow stage is away (every wake of a thread costs CPU)."""

from __future__ import annotations

import threading
import time

import pytest

from stream import transport
from stream.transport import BUSY_WATCH_S, IDLE_WATCH_S, WATCH_S

from .helpers import OpenLink, make_frame


class _CountingEvent(threading.Event):
    """An Event that remembers every timeout it was waited on with (the watchdog's periods)."""

    def __init__(self) -> None:
        super().__init__()
        self.periods: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.periods.append(timeout)
        return super().wait(timeout)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport.threading, "Event", _CountingEvent)


@pytest.mark.usefixtures("counted")
def test_a_stage_waiting_in_recv_is_looked_at_ever_more_rarely(link: OpenLink) -> None:
    ends = link("pubsub", "live")
    closing = ends.rx._closing
    assert isinstance(closing, _CountingEvent)
    assert ends.rx.recv(700) is None  # nothing sent: the stage waits in `recv` all along
    periods = list(closing.periods)
    # doubling from BUSY_WATCH_S: 5, 10, 20, 40, 80, 160, 320 ms fit in 0.7 s; the old
    # watchdog looked every 50 ms (14 looks)
    assert len(periods) <= 9, periods
    assert max(periods) >= 0.16 and max(periods) <= IDLE_WATCH_S, periods
    assert all(b in (a, 2 * a, IDLE_WATCH_S, BUSY_WATCH_S) for a, b in zip(periods[:-1], periods[1:], strict=True))


@pytest.mark.usefixtures("counted")
def test_a_slow_stage_is_looked_at_every_busy_period(link: OpenLink) -> None:
    ends = link("pubsub", "live")
    closing = ends.rx._closing
    assert isinstance(closing, _CountingEvent)
    for _ in range(4):  # a stage that spends 40 ms on each frame, away from `recv`
        ends.rx.recv(1)
        time.sleep(0.04)
    recent = closing.periods[-6:]
    assert recent and all(p == BUSY_WATCH_S for p in recent), closing.periods
    assert BUSY_WATCH_S < WATCH_S


def test_frames_that_end_a_wait_reach_the_stage_and_none_is_lost(link: OpenLink) -> None:
    """Two frames sent while the stage waits in `recv`: the newest is handed on and none is
    lost (the first is handed on too, or counted as an overflow drop)."""
    ends = link("pubsub", "live", transport="tcp")
    assert ends.tx.wait_for_consumers(1, 5)

    def send_two() -> None:
        time.sleep(0.1)  # the stage is waiting in `recv` by then
        for seq in (1, 2):
            assert ends.tx.send(make_frame(seq, (8, 8), time.time_ns()))

    got: list[int] = []
    sender = threading.Thread(target=send_two)
    sender.start()
    try:
        timeout_ms = 3000
        while (msg := ends.rx.recv(timeout_ms)) is not None:
            assert msg.frame is not None
            got.append(msg.frame.seq)
            timeout_ms = 300  # after the first: until nothing more comes
    finally:
        sender.join()
    overflow = ends.rx_stats.drops["overflow"]
    assert got[-1] == 2 and len(got) + overflow == 2, (got, overflow)
    assert ends.rx_stats.counters["in"] == 2
