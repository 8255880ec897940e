"""Shared test helpers: free ports, frames, a producer process, an infer stage in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import zmq

from stream.clock import Clock, WallClock
from stream.codec import EndOfStream
from stream.config import PipelineConfig, load_config
from stream.frame import Frame
from stream.stages.base import StageRuntime
from stream.stages.infer import run_infer
from stream.stats import StageStats
from stream.transport import LinkSpec, Receiver, Sender


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


def infer_stage_config(extra: dict | None = None) -> PipelineConfig:
    """One `infer` stage between lossless push/pull links `in` and `out`; budget 50 ms.

    `extra`: more keys of the stage's config."""
    link = {"pattern": "pushpull", "mode": "lossless"}
    return load_config(
        {
            "name": "t",
            "budget_ms": 50,
            "links": {
                "in": {"endpoint": f"tcp://127.0.0.1:{free_port()}", **link},
                "out": {"endpoint": f"tcp://127.0.0.1:{free_port()}", **link},
            },
            "stages": [
                {
                    "id": "infer",
                    "kind": "infer",
                    "input": "in",
                    "output": "out",
                    "wait_for_consumers": 0,
                    **(extra or {}),
                }
            ],
        }
    )


@dataclass
class InferStage:
    """A running infer stage (in a thread) and the test's ends of its links."""

    rt: StageRuntime
    tx: Sender
    rx: Receiver

    def handled(self) -> int:
        """Frames the stage has sent on or dropped."""
        return self.rt.stats.counters["out"] + sum(self.rt.stats.drops.values())

    def send_and_wait(self, frame: Frame) -> None:
        """Send `frame`, then wait (up to 10 s) until the stage has handled it."""
        before = self.handled()
        self.tx.send(frame)
        end = time.monotonic() + 10
        while self.handled() == before and time.monotonic() < end:
            time.sleep(0.002)
        assert self.handled() == before + 1, "stage did not handle the frame"


@contextmanager
def running_infer_stage(
    cfg: PipelineConfig, clock: Clock, pipeline: object, fallback: object = None
) -> Iterator[InferStage]:
    """Run `run_infer` of `cfg`'s stage `infer` with these (fake) models on `clock`.

    On exit the stage is stopped and joined, and must have ended."""
    rt = StageRuntime(cfg, cfg.stage("infer"), clock=clock, stats_endpoint="")
    stage = threading.Thread(target=run_infer, args=(rt, cfg.stage("infer"), pipeline, fallback))
    ctx = zmq.Context()
    stats = StageStats("test", "test", clock)
    tx = Sender(ctx, "in", cfg.link("in"), "test", clock, stats)
    rx = Receiver(ctx, "out", cfg.link("out"), "test", clock, stats)
    stage.start()
    try:
        yield InferStage(rt, tx, rx)
    finally:
        rt.stop_requested = True
        stage.join(5)
        tx.close()
        rx.close()
        rt.close()
        ctx.term()
    assert not stage.is_alive()
