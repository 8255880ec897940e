"""Beyond one model per frame: temporal skipping and a fallback cascade for the infer stage.

Per frame, `InferSchedule.decide` says: run a model (the main one or the fallback), reuse the
last result, or drop. It never reads a clock itself: the stage passes capture times and the
budget guard's verdict, so every decision is testable with an injected clock.

- Every-Nth: with `run_every: N`, only every Nth frame runs the model; the frames between reuse
  the last result while it is at most `max_reuse_age_ms` older (capture to capture).
- Auto-skip: with `auto_skip: true`, a frame the stage would finish after its deadline (the
  guard's `will_miss`) reuses the last young-enough result instead of being dropped.
- Cascade: with a `fallback:` model, `fallback_after` budget misses of the main model in a
  row (a frame finished after its deadline or over `stage_budget_ms`, or predicted to) switch
  to the fallback; every `probe_every` frames on the fallback (run, reused or dropped) the
  main model runs once as a probe, and a probe that meets the budget switches back. Each switch is returned to the stage, which
  logs and counts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAIN, FALLBACK = "main", "fallback"
Action = Literal["run", "reuse", "drop"]


@dataclass(frozen=True)
class Decision:
    action: Action
    model: str = MAIN  # for "run": which model
    reason: str = ""  # reuse: "every_n" or "budget"; run: "probe" for a probe of the main model
    switch: str | None = None  # "to_fallback" when this very decision switched


@dataclass(frozen=True)
class LastResult:
    seq: int
    capture_ns: int
    model_id: str


class InferSchedule:
    def __init__(
        self,
        run_every: int = 1,
        auto_skip: bool = False,
        max_reuse_age_ms: float = 200.0,
        cascade: bool = False,
        fallback_after: int = 3,
        probe_every: int = 30,
    ) -> None:
        self.run_every = run_every
        self.auto_skip = auto_skip
        self.max_reuse_age_ns = int(max_reuse_age_ms * 1e6)
        self.cascade = cascade
        self.fallback_after = fallback_after
        self.probe_every = probe_every
        self.active = MAIN
        self.misses_in_a_row = 0
        self.since_probe = 0
        self.frames = 0
        self.last: LastResult | None = None

    def _reusable(self, capture_ns: int) -> bool:
        return (
            self.last is not None
            and 0 <= capture_ns - self.last.capture_ns <= self.max_reuse_age_ns
        )

    def _main_missed(self) -> str | None:
        """Count a budget miss of the main model; switch to the fallback after enough."""
        if not self.cascade or self.active != MAIN:
            return None
        self.misses_in_a_row += 1
        if self.misses_in_a_row < self.fallback_after:
            return None
        self.active, self.misses_in_a_row, self.since_probe = FALLBACK, 0, 0
        return "to_fallback"

    def decide(self, capture_ns: int, predicted_miss: bool) -> Decision:
        """What to do with the frame captured at `capture_ns` (its deadline not yet passed)."""
        self.frames += 1
        if self.active == FALLBACK:
            self.since_probe += 1  # every frame counts, run, reused or dropped
        if self.run_every > 1 and (self.frames - 1) % self.run_every and self._reusable(capture_ns):
            return Decision("reuse", reason="every_n")
        if self.active == FALLBACK and self.since_probe >= self.probe_every:
            self.since_probe = 0
            return Decision("run", MAIN, reason="probe")
        if predicted_miss:
            switch = self._main_missed()
            if switch:
                return Decision("run", FALLBACK, switch=switch)
            if self.auto_skip and self._reusable(capture_ns):
                return Decision("reuse", reason="budget")
            return Decision("drop")
        return Decision("run", self.active)

    def record(
        self, model: str, seq: int, capture_ns: int, model_id: str, missed: bool
    ) -> str | None:
        """After a run: remember the result; update the cascade. Returns a switch or None."""
        self.last = LastResult(seq, capture_ns, model_id)
        if model != MAIN:
            return None
        if missed:
            return self._main_missed()
        self.misses_in_a_row = 0
        if self.active == FALLBACK:  # a probe met the budget: the main model is back
            self.active = MAIN
            return "to_main"
        return None
