"""Shared test helpers: free ports, frames, a producer process."""

from __future__ import annotations

import socket
import time

import numpy as np
import zmq

from stream.clock import WallClock
from stream.codec import EndOfStream
from stream.frame import Frame
from stream.stats import StageStats
from stream.transport import LinkSpec, Sender


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_link(pattern: str = "pubsub", mode: str = "live", **extra) -> LinkSpec:
    return LinkSpec(endpoint=f"tcp://127.0.0.1:{free_port()}", pattern=pattern, mode=mode, **extra)


def make_frame(seq: int, shape: tuple[int, ...], clock_ns: int, epoch: int = 1) -> Frame:
    image = np.full(shape, seq % 256, np.uint8)
    fmt = "gray8" if len(shape) == 2 else "bgr8"
    return Frame("s", seq, clock_ns, clock_ns + 10**12, image, fmt, epoch=epoch)


def produce(
    spec: LinkSpec, n: int, fps: float, shape: tuple[int, ...], consumers: int, result
) -> None:
    """Child process: publish `n` frames at `fps` (0: unpaced), then eos; report drops."""
    clock = WallClock()
    ctx = zmq.Context()
    stats = StageStats("producer", "grab", clock)
    sender = Sender(ctx, "link", spec, "producer", clock, stats)
    try:
        if not sender.wait_for_consumers(consumers, 10.0):
            result.put(("error", "no consumer"))
            return
        t_next = time.monotonic()
        for seq in range(n):
            if fps:
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t_next += 1.0 / fps
            sender.send(make_frame(seq, shape, clock.now_ns()))
        sender.send_eos(EndOfStream("s", 1, n - 1), repeats=5)
        result.put(("drops", dict(stats.drops)))
    finally:
        sender.close()
        ctx.term()
