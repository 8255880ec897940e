"""Latency budgets: decide, on a frame's arrival, whether a stage should still work on it."""

from __future__ import annotations

from collections import deque

from .frame import Frame

LATE = "late"  # the frame's deadline had already passed when it arrived
WILL_MISS = "will_miss"  # by this stage's recent timing it would finish after its deadline


class BudgetGuard:
    """Per-stage deadline check with a prediction from the stage's recent processing times.

    `check(frame, now_ns)` returns a drop reason or None. The prediction is the median of the
    last `window` stage times (at least `min_samples` of them), so one slow frame does not start
    a run of drops. Since dropped frames give no new timings, after `probe_after` predicted
    drops in a row the next frame is let through to measure again: a stage that was slow once
    (a cold start, a hiccup) recovers instead of dropping forever. `record(ms)` feeds the
    prediction; `stage_budget_ms`, when set, counts frames that took longer as overruns.
    """

    def __init__(
        self,
        predict: bool = True,
        window: int = 15,
        stage_budget_ms: float | None = None,
        min_samples: int = 3,
        probe_after: int = 5,
    ):
        self.predict = predict
        self.recent: deque[float] = deque(maxlen=window)
        self.stage_budget_ms = stage_budget_ms
        self.min_samples = min_samples
        self.probe_after = probe_after
        self.predicted_in_a_row = 0
        self.overruns = 0

    def expected_ms(self) -> float:
        if len(self.recent) < self.min_samples:
            return 0.0
        ordered = sorted(self.recent)
        return ordered[len(ordered) // 2]

    def check(self, frame: Frame, now_ns: int) -> str | None:
        if now_ns >= frame.deadline_ns:
            return LATE
        if self.predict and now_ns + self.expected_ms() * 1e6 > frame.deadline_ns:
            if self.predicted_in_a_row < self.probe_after:
                self.predicted_in_a_row += 1
                return WILL_MISS
        self.predicted_in_a_row = 0
        return None

    def record(self, stage_ms: float) -> bool:
        """Record one frame's stage time; True if it overran the per-stage budget."""
        self.recent.append(stage_ms)
        if self.stage_budget_ms is not None and stage_ms > self.stage_budget_ms:
            self.overruns += 1
            return True
        return False
