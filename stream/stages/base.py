"""What every stage process shares: its id, clock, stats, signals, links and logger."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import zmq

from ..budget import BudgetGuard
from ..clock import Clock, WallClock
from ..codec import KIND_EOS, EndOfStream
from ..config import PipelineConfig, StageSpec
from ..frame import Frame
from ..security import Security
from ..stats import StageStats, StatsPublisher
from ..transport import Receiver, Sender

RECV_TIMEOUT_MS = 100


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
            self.ctx,
            link,
            self.cfg.link(link),
            self.id,
            self.clock,
            self.stats,
            self.should_stop,
            guard=self.security,
        )
        self._sockets.append(s)
        return s

    def receiver(self, link: str, drop_prefix: str = "") -> Receiver:
        r = Receiver(
            self.ctx,
            link,
            self.cfg.link(link),
            self.id,
            self.clock,
            self.stats,
            drop_prefix=drop_prefix,
            guard=self.security,
        )
        self._sockets.append(r)
        return r

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
        self.publisher.close()
        for s in self._sockets:
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


def admitted_frames(
    rt: StageRuntime,
    receiver: Receiver,
    guard: BudgetGuard,
    before_each: Callable[[], None] | None = None,
) -> Iterator[tuple[Frame, int]]:
    """Yield (frame, arrival_ns) for every frame that passes the budget check.

    Frames that fail it are counted as drops with the guard's reason. Ends when the stage is
    asked to stop or the input stream ends (then `rt.eos` holds the end-of-stream marker).
    `before_each` runs once per loop turn (e.g. to drain a second link).
    """
    while not rt.stop_requested:
        rt.tick()
        if before_each is not None:
            before_each()
        msg = receiver.recv(RECV_TIMEOUT_MS)
        if msg is None:
            continue
        if msg.kind == KIND_EOS:
            rt.eos = msg.eos
            return
        frame = msg.frame
        assert frame is not None
        arrival = rt.clock.now_ns()
        reason = guard.check(frame, arrival)
        if reason is not None:
            rt.stats.drop(reason)
            continue
        yield frame, arrival
