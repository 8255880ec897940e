"""Budget drops, decided with an injected clock: deterministic, no sleeps in the logic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.api import InferenceResult
from stream.budget import LATE, WILL_MISS, BudgetGuard
from stream.clock import FakeClock
from stream.codec import EndOfStream
from stream.frame import Frame

from .helpers import infer_stage_config, running_infer_stage


def frame_at(seq: int, capture_ns: int, deadline_ns: int) -> Frame:
    return Frame("s", seq, capture_ns, deadline_ns, np.zeros((8, 8), np.uint8), "gray8", epoch=1)


def test_guard_late_and_predicted_miss() -> None:
    clock = FakeClock()
    guard = BudgetGuard(predict=True, window=5)
    now = clock.now_ns()
    assert guard.check(frame_at(0, now, now), now) == LATE
    assert guard.check(frame_at(0, now, now + 10_000_000), now) is None  # no history yet
    for _ in range(3):
        guard.record(30.0)
    guard.record(500.0)  # one outlier does not move the median
    assert guard.expected_ms() == 30.0
    assert guard.check(frame_at(0, now, now + 10_000_000), now) == WILL_MISS
    assert guard.check(frame_at(0, now, now + 31_000_000), now) is None
    assert BudgetGuard(predict=False).check(frame_at(0, now, now + 1), now) is None


def test_guard_probes_after_a_run_of_predicted_misses() -> None:
    """A stage that was slow once must not drop forever: every 6th frame is let through."""
    guard = BudgetGuard(window=5, probe_after=5)
    for _ in range(5):
        guard.record(80.0)  # e.g. a cold start
    now = 0
    tight = frame_at(0, now, now + 50_000_000)
    verdicts = [guard.check(tight, now) for _ in range(12)]
    assert verdicts == [WILL_MISS] * 5 + [None] + [WILL_MISS] * 5 + [None]
    for _ in range(3):
        guard.record(10.0)  # the probes measured a fast stage again
    assert guard.expected_ms() == 10.0
    assert guard.check(tight, now) is None


def test_stage_budget_overruns_are_counted() -> None:
    guard = BudgetGuard(stage_budget_ms=20.0)
    assert guard.record(25.0) and not guard.record(5.0)
    assert guard.overruns == 1


class SlowPipeline:
    """A fake model that takes `ms` of the fake clock's time per frame."""

    model_id, labels, backend, device, precision = "fake", ["bg", "fg"], "fake", "cpu", "fp32"

    def __init__(self, clock: FakeClock, ms: float):
        self.clock, self.ms, self.calls = clock, ms, 0

    def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
        self.calls += 1
        self.clock.advance_ms(self.ms)
        return InferenceResult(mask=(image > 0).astype(np.uint8))

    def close(self) -> None:
        pass


def test_infer_stage_drops_by_deadline_with_injected_clock(ipc_dir: Path) -> None:
    cfg = infer_stage_config(ipc_dir)
    clock = FakeClock()
    pipeline = SlowPipeline(clock, 30.0)
    with running_infer_stage(cfg, clock, pipeline) as stage:
        for seq in range(3):  # processed: 30 ms each, which the stage learns
            t = clock.now_ns()
            stage.send_and_wait(frame_at(seq, t, t + 50_000_000))
        t = clock.now_ns()
        stage.send_and_wait(frame_at(3, t - 60_000_000, t - 10_000_000))  # deadline passed: late
        # 20 ms left < 30 ms: will_miss
        stage.send_and_wait(frame_at(4, t - 30_000_000, t + 20_000_000))
        stage.send_and_wait(frame_at(5, t, t + 50_000_000))  # processed
        assert dict(stage.rt.stats.drops) == {LATE: 1, WILL_MISS: 1}
        assert pipeline.calls == 4
        got = [stage.rx.recv(2000) for _ in range(4)]
        assert [m.frame.seq for m in got] == [0, 1, 2, 5]
        assert [s.stage for s in got[3].frame.trace] == ["infer"]
        span = got[3].frame.trace[0]
        assert span.end_ns - span.start_ns == 30_000_000  # measured on the injected clock
        np.testing.assert_array_equal(got[3].frame.parts["mask"], np.zeros((8, 8), np.uint8))
        stage.tx.send_eos(EndOfStream("s", 1, 3))
        eos = stage.rx.recv(2000)
        assert eos is not None and eos.kind == "eos"
