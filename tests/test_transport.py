"""Links over real sockets between real processes: live stays fresh, lossless loses nothing."""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import replace

import pytest
import zmq

from stream.clock import WallClock
from stream.stats import StageStats
from stream.transport import LinkSpec, Receiver

from .helpers import ANY_PORT, produce

pytestmark = pytest.mark.slow  # a producer process per test

CTX = mp.get_context("spawn")


def consume(spec: LinkSpec, work_s: float, timeout_s: float = 20.0):
    """Receive until eos; sleep `work_s` per frame. Returns (frames [(seq, age_ms)], stats)."""
    clock = WallClock()
    ctx = zmq.Context()
    stats = StageStats("consumer", "infer", clock)
    rx = Receiver(ctx, "link", spec, "consumer", clock, stats)
    got: list[tuple[int, float]] = []
    end = time.monotonic() + timeout_s
    try:
        while time.monotonic() < end:
            msg = rx.recv(500)
            if msg is None:
                continue
            if msg.kind == "eos":
                break
            got.append((msg.frame.seq, (clock.now_ns() - msg.frame.capture_ns) / 1e6))
            if work_s:
                time.sleep(work_s)
        else:
            pytest.fail("no end-of-stream before the timeout")
    finally:
        rx.close()
        ctx.term()
    return got, stats


def run_pair(spec: LinkSpec, n: int, fps: float, shape, work_s: float):
    """A producer process binds `spec` (port 0 allowed) and sends; this process consumes."""
    q = CTX.Queue()
    p = CTX.Process(target=produce, args=(spec, n, fps, shape, 1, q))
    p.start()
    try:
        kind, endpoint = q.get(timeout=20)
        assert kind == "endpoint", endpoint
        got, stats = consume(replace(spec, endpoint=endpoint), work_s)
        kind, producer_drops = q.get(timeout=20)
        assert kind == "drops", producer_drops
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
    return got, stats, producer_drops


def test_live_link_slow_consumer_gets_fresh_frames() -> None:
    """1080p at 60 fps, consumer taking 50 ms a frame: ages stay near one processing period."""
    spec = LinkSpec(endpoint=ANY_PORT, pattern="pubsub", mode="live")
    n = 150
    got, stats, producer_drops = run_pair(spec, n, 60.0, (1080, 1920, 3), work_s=0.05)
    ages = [age for _, age in got]
    assert len(got) >= 20
    steady = ages[5:]
    # never a growing backlog: a frame is at most one processing period (50 ms) plus one frame
    # interval (16.7 ms) old, plus generous slack for a loaded 2-core machine
    assert max(steady) < 50 + 16.7 + 40, f"ages {sorted(steady)[-5:]}"
    assert sum(steady[-10:]) / 10 < 60
    seqs = [s for s, _ in got]
    assert seqs == sorted(seqs)
    # every frame is accounted for: received, or counted as dropped somewhere
    dropped = sum(stats.drops.values()) + sum(producer_drops.values())
    assert len(got) + dropped == n, (len(got), dict(stats.drops), producer_drops)
    assert stats.drops["overflow"] > 0


@pytest.mark.parametrize("pattern", ["pubsub", "pushpull"])
def test_lossless_link_loses_nothing(pattern: str) -> None:
    spec = LinkSpec(endpoint=ANY_PORT, pattern=pattern, mode="lossless", hwm=8)
    n = 400
    got, stats, producer_drops = run_pair(spec, n, 0.0, (256, 256), work_s=0.001)
    assert [s for s, _ in got] == list(range(n))
    assert not stats.drops and not producer_drops


def test_live_pushpull_over_ipc(tmp_path) -> None:
    spec = LinkSpec(endpoint=f"ipc://{tmp_path}/l.ipc", pattern="pushpull", mode="live")
    got, stats, producer_drops = run_pair(spec, 120, 120.0, (512, 512), work_s=0.02)
    assert len(got) + sum(stats.drops.values()) + sum(producer_drops.values()) == 120
    assert len(got) >= 20
