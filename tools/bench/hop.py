"""One hop between two processes: medstream's link against raw pyzmq and a memory copy.

The sender is this process; the receiver a fresh child process. Latency is from just before the
send to the moment the receiver holds the frame as a numpy array (wall clock, one host). Raw
pyzmq is the floor for a socket hop: PUB/SUB, zero-copy multipart [8-byte send time, pixels].
medstream's hop is `Sender`/`Receiver` on a live pubsub link: over tcp (inline payload) and over
ipc with the shared-memory ring (`shm: auto`). The in-process copy (`np.copyto`) is the floor
for any hop that moves the pixels once.

Two more pairs: CURVE (`pyzmq-curve`: PUB/SUB with CURVE keys; `medstream-curve`: the live
pubsub link with the same keys set by its socket guard; both tcp; the ZAP check, once per
connection, is left out of both) and lossless (`pyzmq-pushpull`: raw PUSH/PULL;
`medstream-lossless`: a lossless pushpull link), both over tcp.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import resource
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from stream.clock import WallClock
from stream.codec import EndOfStream, decode
from stream.frame import Frame
from stream.stats import StageStats
from stream.transport import LinkSpec, Receiver, Sender

CTX = mp.get_context("spawn")
TRANSPORTS = (
    "pyzmq-tcp",
    "medstream-tcp",
    "medstream-decode",  # the protocol's floor: a plain SUB socket and the wire decoder, no Receiver
    "pyzmq-ipc",
    "medstream-shm",
    "pyzmq-curve",
    "medstream-curve",
    "pyzmq-pushpull",
    "medstream-lossless",
)
Keys = tuple[bytes, bytes, bytes, bytes]  # CURVE: server public, secret; client public, secret
SIZES = {"512x512 gray": (512, 512), "1080x1920x3": (1080, 1920, 3)}
STOP = -1
WARMUP = 10  # first frames of each case left out


@dataclass
class Case:
    transport: str
    size: str
    fps: float  # 0: unpaced
    frames: int
    work_ms: float = 0.0  # receiver's processing time per frame (slow consumer)
    seconds: float = 0.0  # unpaced / slow consumer: send for this long instead of `frames`


def free_port() -> int:
    """A tcp port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _endpoint(transport: str, tmp: Path, port: int) -> str:
    if transport.endswith(("ipc", "shm")):
        return f"ipc://{tmp}/hop-{port}.ipc"
    return f"tcp://127.0.0.1:{port}"


def _link(endpoint: str, transport: str = "medstream-tcp") -> LinkSpec:
    if transport == "medstream-lossless":
        return LinkSpec(endpoint=endpoint, pattern="pushpull", mode="lossless")
    return LinkSpec(endpoint=endpoint, pattern="pubsub", mode="live")


def curve_keys() -> Keys:
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return server_public, server_secret, client_public, client_secret


class CurveGuard:
    """Sets CURVE keys on a socket before it binds (server) or connects (client)."""

    def __init__(self, keys: Keys):
        self.keys = keys

    def secure(self, sock: zmq.Socket, link: str, binds: bool) -> None:
        server_public, server_secret, client_public, client_secret = self.keys
        if binds:
            sock.curve_secretkey = server_secret
            sock.curve_publickey = server_public
            sock.curve_server = True
        else:
            sock.curve_serverkey = server_public
            sock.curve_publickey = client_public
            sock.curve_secretkey = client_secret


def _guard(transport: str, keys: Keys | None) -> CurveGuard | None:
    return CurveGuard(keys) if transport.endswith("curve") and keys is not None else None


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _private_mb() -> float:
    """Memory only this process holds (USS): a shared-memory ring mapped from the sender is
    not the receiver's growth; frames queued in its sockets are."""
    import psutil

    return psutil.Process().memory_full_info().uss / 2**20


def receiver(
    transport: str, endpoint: str, work_ms: float, ready: Any, results: Any, keys: Keys | None = None
) -> None:
    """Child process: receive until the sender says stop; report latencies, CPU and memory."""
    ctx = zmq.Context()
    raw = transport.startswith("pyzmq")
    decode_only = transport == "medstream-decode"
    guard = _guard(transport, keys)
    if raw or decode_only:
        sock = ctx.socket(zmq.PULL if transport.endswith("pushpull") else zmq.SUB)
        if not transport.endswith("pushpull"):
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        if guard is not None:
            guard.secure(sock, "bench", binds=False)
        sock.connect(endpoint)
    else:
        clock = WallClock()
        stats = StageStats("rx", "infer", clock)
        rx = Receiver(ctx, "bench", _link(endpoint, transport), "rx", clock, stats, guard=guard)
    ready.put(True)
    lat: list[float] = []
    recv_ns: list[int] = []
    mem0 = mem_max = _private_mb()
    cpu0, wall0 = _cpu_s(), time.monotonic()
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if raw or decode_only:
                if not sock.poll(2000):
                    continue
                parts = sock.recv_multipart(copy=False)
            if raw:
                (t_send,) = struct.unpack("<q", parts[0].bytes)
                if t_send == STOP:
                    break
                image = np.frombuffer(parts[1].buffer, np.uint8)  # the frame, as an array
            elif decode_only:  # every header checked and the frame built, nothing accounted
                frame = decode(parts).frame
                if frame is None:
                    break
                t_send, image = frame.capture_ns, frame.image
            else:
                msg = rx.recv(2000)
                if msg is None:
                    continue
                if msg.kind == "eos" or msg.frame is None:
                    break
                t_send, image = msg.frame.capture_ns, msg.frame.image
            now = time.time_ns()
            lat.append((now - t_send) / 1e6)
            recv_ns.append(now)
            del image
            if work_ms:
                time.sleep(work_ms / 1000.0)
                mem_max = max(mem_max, _private_mb())
        cpu, wall = _cpu_s() - cpu0, time.monotonic() - wall0
        drops = {} if raw or decode_only else dict(rx.stats.drops)
        mem_max = max(mem_max, _private_mb())
        results.put({"latency_ms": lat, "recv_ns": recv_ns, "cpu_s": cpu, "wall_s": wall,
                     "mem_start_mb": mem0, "mem_max_mb": mem_max, "drops": drops})
    finally:
        if raw or decode_only:
            sock.close(linger=0)
        else:
            rx.close()
        ctx.term()


class _RawSender:
    def __init__(self, ctx: zmq.Context, endpoint: str, transport: str, keys: Keys | None):
        self.sock = ctx.socket(zmq.PUSH if transport.endswith("pushpull") else zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 2000)
        guard = _guard(transport, keys)
        if guard is not None:
            guard.secure(self.sock, "bench", binds=True)
        self.sock.bind(endpoint)

    def wait(self) -> None:
        time.sleep(0.5)  # PUB cannot tell when the subscriber joined: give it time

    def send(self, image: np.ndarray, seq: int) -> None:
        self.sock.send_multipart([struct.pack("<q", time.time_ns()), image], copy=False)

    def stop(self) -> None:
        for _ in range(5):
            self.sock.send_multipart([struct.pack("<q", STOP), b""])
            time.sleep(0.02)

    def close(self) -> None:
        self.sock.close()


class _MedstreamSender:
    def __init__(self, ctx: zmq.Context, endpoint: str, transport: str, keys: Keys | None):
        self.clock = WallClock()
        self.stats = StageStats("tx", "grab", self.clock)
        self.sender = Sender(ctx, "bench", _link(endpoint, transport), "tx", self.clock,
                             self.stats, guard=_guard(transport, keys))

    def wait(self) -> None:
        if not self.sender.wait_for_consumers(1, 30):
            raise RuntimeError("the receiver never subscribed")

    def send(self, image: np.ndarray, seq: int) -> None:
        now = self.clock.now_ns()
        fmt = "gray8" if image.ndim == 2 else "bgr8"
        self.sender.send(Frame("bench", seq, now, now + 10**12, image, fmt, epoch=1))

    def stop(self) -> None:
        self.sender.send_eos(EndOfStream("bench", 1, 0), repeats=5)

    def close(self) -> None:
        self.sender.close()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"p50": None, "p99": None, "max": None}
    pct = lambda p: round(float(np.percentile(a, p, method="inverted_cdf")), 3)  # noqa: E731
    return {"p50": pct(50), "p99": pct(99), "max": round(float(a.max()), 3)}


def _stop(sender: _RawSender | _MedstreamSender, results: Any, timeout_s: float = 120.0) -> dict:
    """Tell the receiver to stop until it answers: a stop message can be dropped like any
    frame on a full live link, and a raw PUB queue may take seconds to drain."""
    deadline = time.monotonic() + timeout_s
    while True:
        sender.stop()
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver did not report back") from None


def start_without_blas_pool(child: Any) -> None:
    """Start `child` with OPENBLAS_NUM_THREADS=1 (this process's environment is left as it was).
    After `import numpy`, OpenBLAS's idle pool thread (one on a 2-core machine) spins for about
    0.1 s of CPU before it sleeps: in a fresh receiver that fell inside the measured window, where
    it added a varying 0.08-0.15 ms a frame to raw and medstream receivers alike and competed with
    both for the cores. Neither receiver does linear algebra."""
    old = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        child.start()
    finally:
        if old is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = old


def run_case(case: Case, tmp: Path) -> dict[str, Any]:
    """Send `case.frames` frames (or for `case.seconds`) at `case.fps` to a child receiver."""
    endpoint = _endpoint(case.transport, tmp, free_port())
    image = np.random.default_rng(0).integers(0, 256, SIZES[case.size], dtype=np.uint8)
    ready, results = CTX.Queue(), CTX.Queue()
    keys = curve_keys() if case.transport.endswith("curve") else None
    child = CTX.Process(
        target=receiver, args=(case.transport, endpoint, case.work_ms, ready, results, keys)
    )
    ctx = zmq.Context()
    kind = _RawSender if case.transport.startswith("pyzmq") else _MedstreamSender
    sender = kind(ctx, endpoint, case.transport, keys)
    start_without_blas_pool(child)
    try:
        ready.get(timeout=60)
        sender.wait()
        t0 = time.monotonic()
        sent = 0
        t_next = t0
        while (sent < case.frames) if not case.seconds else (time.monotonic() - t0 < case.seconds):
            if case.fps:
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t_next += 1.0 / case.fps
            sender.send(image, sent)
            sent += 1
        send_s = time.monotonic() - t0
        got = _stop(sender, results)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
        sender.close()
        ctx.term()
    lat = got["latency_ms"]
    skip = WARMUP if len(lat) > 2 * WARMUP else 0
    steady = lat[skip:]
    recv = np.asarray(got["recv_ns"][skip:], dtype=np.int64)
    span_s = (recv[-1] - recv[0]) / 1e9 if recv.size > 1 else 0.0
    fps = (recv.size - 1) / span_s if span_s > 0 else None
    out = {
        "transport": case.transport,
        "size": case.size,
        "fps_target": case.fps,
        "sent": sent,
        "send_fps": round(sent / send_s, 1) if send_s else None,
        "received": len(lat),
        "recv_fps": None if fps is None else round(fps, 1),
        **{f"latency_{k}_ms": v for k, v in _percentiles(steady).items()},
        "receiver_cpu_ms_per_frame": round(1000 * got["cpu_s"] / max(1, len(lat)), 3),
        "receiver_cpu_percent": (
            round(100 * got["cpu_s"] / got["wall_s"], 1) if got["wall_s"] else None
        ),
        "receiver_memory_growth_mb": round(got["mem_max_mb"] - got["mem_start_mb"], 1),
        "receiver_drops": got["drops"],
    }
    if case.work_ms:
        out["work_ms"] = case.work_ms
    return out


def copy_floor(size: str, frames: int) -> dict[str, Any]:
    """The in-process copy of one frame (`np.copyto`), timed like a hop: into a rotation of 8
    destinations, as the ring's slots are (so the copy is not served from the CPU cache)."""
    src = np.random.default_rng(0).integers(0, 256, SIZES[size], dtype=np.uint8)
    dst = [np.ones_like(src) for _ in range(8)]
    times = []
    for i in range(frames + WARMUP):
        t0 = time.perf_counter_ns()
        np.copyto(dst[i % 8], src)
        if i >= WARMUP:
            times.append((time.perf_counter_ns() - t0) / 1e6)
    mean = float(np.mean(times))
    return {
        "transport": "memcpy",
        "size": size,
        **{f"latency_{k}_ms": v for k, v in _percentiles(times).items()},
        "recv_fps": round(1000 / mean, 1),
    }
