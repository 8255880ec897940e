"""Shared test helpers: link ends on port 0 or inproc, waiting on a condition, frames, a
producer process, an infer stage in a thread. Fixtures that use them: tests/conftest.py."""

from __future__ import annotations

import itertools
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

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

ANY_PORT = "tcp://127.0.0.1:*"  # ZeroMQ binds a free port; read it back with `bound_endpoint`
IPC_PATH_MAX = 100  # bytes: a unix socket path must fit sockaddr_un (108 with the terminator)
_inproc_names = itertools.count()


def bound_endpoint(sock: zmq.Socket) -> str:
    """The endpoint `sock` last bound, with the real port where it bound `tcp://...:*`."""
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def ipc_endpoint(folder: Path, name: str) -> str:
    """`ipc://FOLDER/NAME.sock`; fails with the path when it is too long for a unix socket."""
    path = folder / f"{name}.sock"
    assert len(str(path).encode()) <= IPC_PATH_MAX, f"ipc path too long for a socket: {path}"
    return f"ipc://{path}"


def inproc_endpoint() -> str:
    """A fresh `inproc://` name (both ends must share one zmq.Context)."""
    return f"inproc://test-link-{next(_inproc_names)}"


def _outside_ephemeral_range() -> range:
    """Up to 12,000 ports next to the kernel's range for port-0 binds (below it, or above it
    where more room is there), which no port-0 bind can be given."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    below = range(max(1024, low - 12_000), low)
    above = range(high + 1, min(65536, high + 12_001))
    return below if len(below) >= len(above) else above


def child_port() -> int:
    """A TCP port to write into a child process's config (a viewer, a server), for the one case
    where the test cannot bind port 0 itself. Drawn outside the kernel's ephemeral range, so no
    port-0 bind of any process can be given it, and free when asked; a child that still finds it
    taken exits, and its starter retries with another (`test_pipeline.start_run`)."""
    ports = _outside_ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.choice(ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free TCP port in {ports}")


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, poll_s: float = 0.002) -> bool:
    """Poll `predicate` until it is true or `timeout_s` passed; its last verdict."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= end:
            return bool(predicate())
        time.sleep(poll_s)
    return True


class FakeTime:
    """Stands in for the `time` module of code that paces itself with `time.monotonic()` and
    `time.sleep()` (monkeypatch it in): the clock moves only when slept, so pacing is instant
    and exact."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        self.slept += max(0.0, seconds)


@dataclass
class LinkEnds:
    """Both ends of one link, opened by `open_link`; `close` closes both."""

    tx: Sender
    rx: Receiver
    tx_stats: StageStats
    rx_stats: StageStats
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.tx.close()
            self.rx.close()


OpenLink = Callable[..., LinkEnds]  # the `link` fixture: link(pattern, mode, transport, ...)


def open_link(
    ctx: zmq.Context,
    spec: LinkSpec,
    tx_clock: Clock | None = None,
    rx_clock: Clock | None = None,
) -> LinkEnds:
    """A Sender and a Receiver on `spec`, the binding end first. An endpoint `tcp://...:*` is
    bound on a free port, which the connecting end then reads back (no port guessing)."""
    tx_clock = tx_clock or WallClock()
    rx_clock = rx_clock or WallClock()
    tx_stats = StageStats("tx", "grab", tx_clock)
    rx_stats = StageStats("rx", "infer", rx_clock)
    if spec.bind == "producer":
        tx = Sender(ctx, "link", spec, "tx", tx_clock, tx_stats)
        spec = replace(spec, endpoint=bound_endpoint(tx.sock))
        try:
            rx = Receiver(ctx, "link", spec, "rx", rx_clock, rx_stats)
        except BaseException:
            tx.close()
            raise
    else:
        rx = Receiver(ctx, "link", spec, "rx", rx_clock, rx_stats)
        spec = replace(spec, endpoint=bound_endpoint(rx.sock))
        try:
            tx = Sender(ctx, "link", spec, "tx", tx_clock, tx_stats)
        except BaseException:
            rx.close()
            raise
    return LinkEnds(tx, rx, tx_stats, rx_stats)


def make_frame(seq: int, shape: tuple[int, ...], clock_ns: int, epoch: int = 1) -> Frame:
    image = np.full(shape, seq % 256, np.uint8)
    fmt = "gray8" if len(shape) == 2 else "bgr8"
    return Frame("s", seq, clock_ns, clock_ns + 10**12, image, fmt, epoch=epoch)


def produce(
    spec: LinkSpec, n: int, fps: float, shape: tuple[int, ...], consumers: int, result
) -> None:
    """Child process: bind `spec` (port 0 allowed) and report ("endpoint", the bound one), then
    publish `n` frames at `fps` (0: unpaced), then eos; report ("drops", {reason: n})."""
    clock = WallClock()
    ctx = zmq.Context()
    stats = StageStats("producer", "grab", clock)
    sender = Sender(ctx, "link", spec, "producer", clock, stats)
    result.put(("endpoint", bound_endpoint(sender.sock)))
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


def infer_stage_config(sockets: Path, extra: dict | None = None) -> PipelineConfig:
    """One `infer` stage between lossless push/pull links `in` and `out` (ipc sockets in the
    folder `sockets`); budget 50 ms. `extra`: more keys of the stage's config."""
    link = {"pattern": "pushpull", "mode": "lossless"}
    return load_config(
        {
            "name": "t",
            "budget_ms": 50,
            "links": {
                "in": {"endpoint": ipc_endpoint(sockets, "in"), **link},
                "out": {"endpoint": ipc_endpoint(sockets, "out"), **link},
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
        wait_until(lambda: self.handled() != before, 10)
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
