"""Per-stage counters, drops by reason and latency histograms, published as JSON snapshots.

Each stage owns one `StageStats`. Frames of several streams (several grab stages feeding one
infer stage) are also counted per stream (`streams[<id>]`: counters, drops, histograms), so the
run report can account for every stream on its own. A `StatsPublisher` pushes its snapshot to the supervisor's
stats endpoint at a steady rate and once more, marked final, when the stage stops.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from .clock import Clock
from .histogram import Histogram

if TYPE_CHECKING:
    from .transport import SocketGuard

STATS_LINK = "stats"  # the stats channel's name for CURVE (allow-lists, ZAP domain)

# histogram names used across stages
STAGE_MS = "stage_ms"  # time a stage spent on a frame (arrival -> handed on)
QUEUE_MS = "queue_ms"  # time a frame waited on the link (sent -> received)
GLASS_MS = "glass_to_glass_ms"  # capture -> rendered frame handed to the sinks (render only)
DISPLAY_MS = "display_ms"  # capture -> shown in a viewer's browser, as the page reported it
OVERLAY_AGE_MS = "overlay_age_ms"  # passthrough render: age of the overlay drawn
MAX_STREAMS = 64  # streams counted apart per stage; frames of further ones under OTHER_STREAM
OTHER_STREAM = "_other"


class StreamStats:
    """What one stage has seen of one stream: counters, drops by reason, histograms."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.hists: dict[str, Histogram] = {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "drops": dict(self.drops),
            "hists": {k: h.to_dict() for k, h in self.hists.items()},
        }


class StageStats:
    """What one stage process has seen since it started."""

    def __init__(self, stage: str, kind: str, clock: Clock):
        self.stage = stage
        self.kind = kind
        self.clock = clock
        self.pid = os.getpid()
        self.started_ns = clock.now_ns()
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.hists: dict[str, Histogram] = {}
        self.info: dict[str, Any] = {}
        self.streams: dict[str, StreamStats] = {}
        self.first_out_ns: int | None = None
        self.last_out_ns: int | None = None
        self.cpu_at_first_out: float | None = None  # this process's CPU seconds then
        self.snapshot_hooks: list[Callable[[], None]] = []  # bring counters up to date first

    def stream(self, stream: str) -> StreamStats:
        """The figures of one stream (the first MAX_STREAMS apart, the rest together)."""
        got = self.streams.get(stream)
        if got is None:
            if len(self.streams) >= MAX_STREAMS:
                stream = OTHER_STREAM
            got = self.streams.setdefault(stream, StreamStats())
        return got

    def count(self, name: str, n: int = 1, stream: str | None = None) -> None:
        self.counters[name] += n
        if stream is not None:
            self.stream(stream).counters[name] += n

    def drop(self, reason: str, n: int = 1, stream: str | None = None) -> None:
        """Count `n` frames dropped for `reason` (late, will_miss, overflow, invalid:<why>, ...),
        also under their stream where it is known."""
        if n > 0:
            self.drops[reason] += n
            if stream is not None:
                self.stream(stream).drops[reason] += n

    def observe(self, name: str, ms: float, stream: str | None = None) -> None:
        hist = self.hists.get(name)
        if hist is None:
            hist = self.hists[name] = Histogram()
        hist.record(ms)
        if stream is not None:
            per = self.stream(stream).hists
            if name not in per:
                per[name] = Histogram()
            per[name].record(ms)

    def frame_out(self, now_ns: int, stream: str | None = None) -> None:
        """Count a frame handed on (sent downstream, or delivered to the sinks)."""
        self.counters["out"] += 1
        if stream is not None:
            self.stream(stream).counters["out"] += 1
        if self.first_out_ns is None:
            self.first_out_ns = now_ns
            self.cpu_at_first_out = time.process_time()
        self.last_out_ns = now_ns

    def fps(self) -> float:
        n = self.counters["out"]
        if n < 2 or self.first_out_ns is None or self.last_out_ns is None:
            return 0.0
        if self.last_out_ns == self.first_out_ns:
            return 0.0
        return (n - 1) / ((self.last_out_ns - self.first_out_ns) / 1e9)

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        for hook in self.snapshot_hooks:
            hook()
        return {
            "stage": self.stage,
            "kind": self.kind,
            "pid": self.pid,
            "started_ns": self.started_ns,
            "now_ns": self.clock.now_ns(),
            "final": final,
            "counters": dict(self.counters),
            "drops": dict(self.drops),
            "hists": {k: h.to_dict() for k, h in self.hists.items()},
            "info": self.info,
            "streams": {k: v.to_dict() for k, v in self.streams.items()},
            "first_out_ns": self.first_out_ns,
            "last_out_ns": self.last_out_ns,
            # CPU seconds this process used since its first frame out (startup left out)
            "cpu_s": 0.0
            if self.cpu_at_first_out is None
            else round(time.process_time() - self.cpu_at_first_out, 4),
        }


class StatsPublisher:
    """Pushes snapshots to `endpoint` every `interval_s` (never blocking the stage)."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str | None,
        stats: StageStats,
        interval_s: float = 0.5,
        guard: SocketGuard | None = None,
    ):
        self.stats = stats
        self.interval_s = interval_s
        self.next_t = 0.0
        self.sock: zmq.Socket | None = None
        if endpoint:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.SNDHWM, 16)
            self.sock.setsockopt(zmq.LINGER, 2000)
            try:
                if guard is not None:
                    guard.secure(self.sock, STATS_LINK, binds=False)
                self.sock.connect(endpoint)
            except BaseException:
                self.sock.close(linger=0)
                raise

    def maybe_publish(self) -> None:
        now = time.monotonic()
        if now >= self.next_t:
            self.next_t = now + self.interval_s
            self.publish()

    def publish(self, final: bool = False) -> None:
        if self.sock is None:
            return
        body = json.dumps(self.stats.snapshot(final), separators=(",", ":")).encode()
        try:
            self.sock.send(body, zmq.NOBLOCK)
        except zmq.Again:
            pass  # nobody collecting stats right now; the next snapshot supersedes

    def close(self) -> None:
        if self.sock is not None:
            self.publish(final=True)
            self.sock.close()
            self.sock = None
