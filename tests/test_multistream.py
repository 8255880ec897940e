"""Several streams through one graph: the batcher (injected clock), the live receiver's
per-stream mailbox, per-stream accounting, batched inference."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from engines import EngineSpec, load_pipeline
from stream.clock import FakeClock
from stream.frame import Frame
from stream.stages.batcher import Batcher
from stream.stats import GLASS_MS, StageStats

from .helpers import OpenLink, make_frame, wait_until

MS = 1_000_000


def frame(stream: str, seq: int, capture_ns: int, budget_ms: float = 100.0) -> Frame:
    return Frame(stream, seq, capture_ns, capture_ns + int(budget_ms * MS), np.zeros((4, 4), np.uint8))


def test_a_batch_waits_at_most_max_wait_then_runs_what_it_has() -> None:
    b = Batcher(max_batch=4, max_wait_ms=5.0)
    b.add(frame("a", 0, 0), now_ns=0)
    assert not b.ready(4 * MS)
    assert b.ready(5 * MS)
    assert [f.stream for f in b.take(5 * MS)] == ["a"]
    assert not b.ready(100 * MS)  # nothing open


def test_a_full_batch_runs_at_once() -> None:
    b = Batcher(max_batch=2, max_wait_ms=50.0)
    b.add(frame("a", 0, 0), 0)
    assert not b.ready(1 * MS)
    b.add(frame("b", 0, 0), 1 * MS)
    assert b.ready(1 * MS)


def test_a_batch_never_waits_past_its_earliest_deadline_less_the_run_time() -> None:
    b = Batcher(max_batch=4, max_wait_ms=50.0)
    b.add(frame("a", 0, 0, budget_ms=100), 0)
    b.add(frame("b", 0, 0, budget_ms=20), 1 * MS)  # due by 20 ms, a run takes 8 ms
    assert b.due_ns(reserve_ns=8 * MS) == 12 * MS
    assert not b.ready(11 * MS, reserve_ns=8 * MS)
    assert b.ready(12 * MS, reserve_ns=8 * MS)


def test_a_second_frame_of_a_stream_closes_the_batch_and_opens_the_next() -> None:
    b = Batcher(max_batch=4, max_wait_ms=50.0)
    b.add(frame("fast", 0, 0), 0)
    b.add(frame("fast", 1, 2 * MS), 2 * MS)
    assert b.ready(2 * MS)
    assert [f.seq for f in b.take(2 * MS)] == [0]
    assert [f.seq for f in b.frames] == [1] and b.opened_ns == 2 * MS


def test_a_slow_stream_is_never_starved_by_a_fast_one() -> None:
    """A 200 fps stream and a 10 fps stream into a batcher run by a loop on an injected clock
    (as the stage's: take when due, else sleep until the next arrival or the due time): every
    frame of both streams runs, none waits past max_wait."""
    clock = FakeClock(0)
    b = Batcher(max_batch=2, max_wait_ms=3.0)
    arrivals = sorted(
        [(t * MS, "fast") for t in range(0, 1000, 5)] + [(t * MS + 1, "slow") for t in range(0, 1000, 100)]
    )
    ran: dict[str, list[int]] = {"fast": [], "slow": []}
    waits: list[int] = []
    seqs = {"fast": 0, "slow": 0}

    def run_if_ready() -> None:
        if b.ready(clock.now_ns()):
            for f in b.take(clock.now_ns()):
                ran[f.stream].append(f.seq)
                waits.append(clock.now_ns() - f.capture_ns)

    for t, stream in arrivals:
        due = b.due_ns()
        if due is not None and due < t:  # the loop wakes at the due time, before this arrival
            clock.sleep_until_ns(due)
            run_if_ready()
        clock.sleep_until_ns(t)
        b.add(frame(stream, seqs[stream], t), clock.now_ns())
        seqs[stream] += 1
        run_if_ready()
    clock.sleep_until_ns(b.due_ns() or 0)
    run_if_ready()
    assert ran["slow"] == list(range(10))
    assert ran["fast"] == list(range(200))
    assert 0 < max(waits) <= 3 * MS


def test_the_live_receiver_keeps_the_newest_frame_per_stream(link: OpenLink) -> None:
    """A fast stream floods the link; the slow stream's one frame is not pushed out, and it is
    handed over before the fast stream's (it waited longer)."""
    ends = link("pushpull", "live", hwm=64)
    now = time.time_ns()
    slow = dataclasses.replace(make_frame(0, (4, 4), now), stream="slow")
    assert ends.tx.send(slow)
    for seq in range(20):
        ends.tx.send(dataclasses.replace(make_frame(seq, (4, 4), now), stream="fast"))
    assert wait_until(lambda: ends.rx._drops[("overflow", "fast")] == 19, 5.0)
    got = [ends.rx.recv(1000), ends.rx.recv(1000)]
    assert [m.frame.stream for m in got if m and m.frame] == ["slow", "fast"]
    stats = ends.rx_stats
    fast = stats.streams["fast"]
    assert "overflow" not in stats.streams["slow"].drops
    assert stats.streams["slow"].counters["in"] == 1 and fast.counters["in"] == 1
    assert fast.drops["overflow"] == 19  # 20 frames of it, one handed over
    assert stats.drops["overflow"] == fast.drops["overflow"]


def test_per_stream_counts_add_up_to_the_stage_totals() -> None:
    stats = StageStats("render", "render", FakeClock(0))
    for i in range(5):
        stats.frame_out(i, stream="a")
        stats.observe(GLASS_MS, 10.0 + i, stream="a")
    stats.frame_out(9, stream="b")
    stats.drop("late", 3, stream="b")
    stats.drop("invalid:header")  # not a frame of any stream
    snap = stats.snapshot()
    assert snap["streams"]["a"]["counters"] == {"out": 5}
    assert snap["streams"]["b"] == {"counters": {"out": 1}, "drops": {"late": 3}, "hists": {}}
    assert snap["counters"]["out"] == 6 and snap["drops"] == {"late": 3, "invalid:header": 1}
    assert snap["streams"]["a"]["hists"][GLASS_MS]["count"] == 5


def test_run_batch_gives_the_same_results_as_one_call_per_frame() -> None:
    pipeline = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime"))
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (h, w), dtype=np.uint8) for h, w in ((256, 256), (300, 200), (128, 160))]
    try:
        batched = pipeline.run_batch(images, ["gray8"] * 3)  # type: ignore[attr-defined]
        single = [pipeline(im, "gray8") for im in images]
    finally:
        pipeline.close()
    for b, s, im in zip(batched, single, images, strict=True):
        assert b.mask is not None and s.mask is not None and b.mask.shape == im.shape
        assert np.mean(b.mask == s.mask) > 0.999
        assert b.confidence is not None and s.confidence is not None
        assert np.abs(b.confidence.astype(int) - s.confidence.astype(int)).max() <= 2


def test_run_batch_refuses_mismatched_lists() -> None:
    pipeline = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime"))
    try:
        with pytest.raises(ValueError):
            pipeline.run_batch([np.zeros((8, 8), np.uint8)] * 2, ["gray8"])  # type: ignore[attr-defined]
    finally:
        pipeline.close()
