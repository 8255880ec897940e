"""What every stage process shares: its id, clock, stats, signals, links and logger."""

from __future__ import annotations

import logging
import signal
import sys
from dataclasses import dataclass
from types import FrameType

import zmq

from ..clock import Clock, WallClock
from ..codec import EndOfStream
from ..config import PipelineConfig, StageSpec
from ..frame import Frame
from ..framelog import FrameLog
from ..security import Security
from ..stats import StageStats, StatsPublisher
from ..transport import LOSSLESS_LINGER_S, LinkSpec, Receiver, Sender


@dataclass(frozen=True)
class Drop:
    """A frame not handed on, and why (late, will_miss, error, overflow, no_consumer, ...)."""

    reason: str


def stage_logger(stage_id: str) -> logging.Logger:
    """A logger whose lines start with the stage id (stderr; the supervisor passes it through)."""
    log = logging.getLogger(f"medstream.{stage_id}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[{stage_id}] %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class StageRuntime:
    """Context for one running stage: stop flag (set by SIGTERM/SIGINT), stats, sockets.

    With `security.curve` its sockets are CURVE-secured with the stage's key; a missing or
    unsafe key file raises `KeyFileError` here, before anything is bound."""

    def __init__(
        self,
        cfg: PipelineConfig,
        spec: StageSpec,
        clock: Clock | None = None,
        stats_endpoint: str | None = None,
    ):
        self.cfg = cfg
        self.spec = spec
        self.id = spec.id
        self.clock = clock or WallClock()
        self.ctx = zmq.Context()
        self.stats = StageStats(spec.id, spec.kind, self.clock)
        self.log = stage_logger(spec.id)
        self.security: Security | None = None
        endpoint = cfg.stats_endpoint if stats_endpoint is None else stats_endpoint
        try:
            if cfg.security.curve:
                self.security = Security(cfg, spec.id, self.ctx, self.log)
            self.publisher = StatsPublisher(
                self.ctx, endpoint or None, self.stats, guard=self.security
            )
        except BaseException:
            if self.security is not None:
                self.security.close()
            self.ctx.term()
            raise
        self.framelog = FrameLog(self.ctx, cfg.frame_log, spec.id)  # for a profiler, if listening
        self.stop_requested = False
        self._skew_logged = False
        self.budget_ns = int(cfg.budget_ms * 1e6)
        self.eos: EndOfStream | None = None  # set when an input stream ended
        self._sockets: list[Sender | Receiver] = []

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def should_stop(self) -> bool:
        return self.stop_requested

    def sender(self, link: str) -> Sender:
        s = Sender(
            *self._link_args(link),
            self.should_stop,
            guard=self.security,
            count_drops=False,  # a refused send is counted by `settle`, with the frame
        )
        self._sockets.append(s)
        return s

    def receiver(self, link: str, drop_prefix: str = "") -> Receiver:
        r = Receiver(
            *self._link_args(link),
            drop_prefix=drop_prefix,
            guard=self.security,
            should_stop=self.should_stop,
        )
        self._sockets.append(r)
        return r

    def _link_args(self, link: str) -> tuple[zmq.Context, str, LinkSpec, str, Clock, StageStats]:
        """The arguments every link socket of this stage opens with, up to `stats`."""
        return self.ctx, link, self.cfg.link(link), self.id, self.clock, self.stats

    def settle(
        self,
        frame: Frame,
        outcome: Drop | None,
        start_ns: int,
        end_ns: int,
        handoff_ns: int | None = None,
    ) -> None:
        """Count what became of `frame`: handed on (`outcome` None; a sink stage's
        `handoff_ns`) or dropped. The one place the stats and the frame log learn a frame's
        fate, so every frame a stage takes in is counted exactly once in both."""
        if outcome is not None:
            self.stats.drop(outcome.reason, stream=frame.stream)
            self.framelog.drop(frame, outcome.reason, start_ns, end_ns)
            return
        self.stats.frame_out(end_ns if handoff_ns is None else handoff_ns, frame.stream)
        self.framelog.out(frame, start_ns, end_ns, handoff_ns=handoff_ns)

    def tick(self) -> None:
        """Call once per loop: publishes stats when due."""
        if self.security is not None:
            self.stats.counters.update(self.security.take_counts())
        if self.stats.counters["clock_skew"] and not self._skew_logged:
            self._skew_logged = True
            self.log.warning(
                "frames arrive stamped later than this host's clock: the hosts' clocks disagree "
                "(synchronise them with PTP or NTP); latencies are not recorded for those frames "
                "and are counted as clock_skew"
            )
        self.publisher.maybe_publish()

    def close(self) -> None:
        if self.security is not None:
            self.stats.counters.update(self.security.take_counts())
        self.publisher.close()  # the final snapshot: the supervisor sees this stage stop producing
        self.framelog.close()
        for s in self._sockets:
            if isinstance(s, Sender) and s.spec.mode == "lossless":
                # the frames still queued reach the consumer before `term` returns, within
                # LOSSLESS_LINGER_S; a signal (the supervisor's, once no frame has moved for
                # its DRAIN_S) ends the wait
                s.close(linger_ms=int(LOSSLESS_LINGER_S * 1000))
            else:
                s.close()
        if self.security is not None:
            self.security.close()
        self.ctx.term()


def sleep_until(clock: Clock, t_ns: int, runtime: StageRuntime) -> None:
    """Sleep until `t_ns`, waking at least every 50 ms to honour a stop request."""
    while not runtime.stop_requested:
        now = clock.now_ns()
        if now >= t_ns:
            return
        clock.sleep_until_ns(min(t_ns, now + 50_000_000))
