"""What the profiler listens to while a pipeline runs: the frame log, the stats channel, a link.

- frame log: the profiler binds the config's `frame_log` endpoint (SUB); every stage connects to
  it and, once it sees the subscription, sends one record per frame event (`stream.framelog`).
- stats channel: the supervisor's `stats_pub` (`stream.stats_relay`): drops by reason from the
  stages' own counters, and the final snapshots (the run report's source).
- a link (optional): subscribe to the frames on a link like any consumer and use their headers
  (trace, capture time); the profile then ends at the tap instead of at the render stage.
"""

from __future__ import annotations

import json
import time
from typing import Any

import zmq

from stream.stats_relay import StatsMessageError, decode_message
from stream.transport import ensure_ipc_dir

from .records import FrameTable

FRAME_LOG_HWM = 200_000


class ProfileTap:
    """Sockets and what came in on them. `poll(ms)` reads whatever arrives within `ms`."""

    def __init__(
        self,
        ctx: zmq.Context,
        frame_log: str,
        stats_pub: str,
        link: tuple[str, str] | None = None,
    ):
        self.table = FrameTable()
        self.first_stats: dict[str, Any] | None = None
        self.last_stats: dict[str, Any] | None = None
        self.invalid_stats = 0
        self.link_name = link[0] if link else ""
        self.poller = zmq.Poller()
        self.sockets: list[zmq.Socket] = []
        self.log = self.stats = self.link = None
        try:
            if frame_log:
                ensure_ipc_dir(frame_log)
                self.log = self._socket(ctx, zmq.SUB, FRAME_LOG_HWM)
                self.log.bind(frame_log)
            if stats_pub:
                self.stats = self._socket(ctx, zmq.SUB, 64)
                self.stats.connect(stats_pub)
            if link:
                self.link = self._socket(ctx, zmq.SUB, 1000)
                self.link.connect(link[1])
        except zmq.ZMQError:
            self.close()
            raise

    def _socket(self, ctx: zmq.Context, kind: int, hwm: int) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sockets.append(sock)
        self.poller.register(sock, zmq.POLLIN)
        return sock

    @property
    def final(self) -> bool:
        return bool(self.last_stats and self.last_stats.get("final"))

    def poll(self, timeout_ms: int) -> None:
        end = time.monotonic() + timeout_ms / 1000.0
        while True:
            left = max(0, int((end - time.monotonic()) * 1000))
            ready = dict(self.poller.poll(left))
            if not ready:
                return
            for sock in ready:
                self._drain(sock)

    def _drain(self, sock: zmq.Socket) -> None:
        for _ in range(10_000):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if sock is self.log:
                for p in parts:
                    self.table.add_json(p.bytes)
            elif sock is self.stats:
                self._on_stats([p.bytes for p in parts])
            else:
                self._on_link(parts)

    def _on_stats(self, parts: list[bytes]) -> None:
        try:
            msg = decode_message(parts)
        except StatsMessageError:
            self.invalid_stats += 1
            return
        if self.first_stats is None:
            self.first_stats = msg
        self.last_stats = msg

    def _on_link(self, parts: list[Any]) -> None:
        now = time.time_ns()
        try:
            header = json.loads(parts[1].bytes)
        except (IndexError, ValueError):  # no header part, or not JSON
            self.table.invalid += 1
            return
        if isinstance(header, dict):
            self.table.add_link_header(header, f"tap:{self.link_name}", now)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
