"""The stats channel for tools: every stage's latest snapshot, re-published on a PUB socket.

Stages PUSH their snapshots to the supervisor (`stream.stats`). The supervisor keeps the newest
per (stage, pid) and re-publishes them all together on `stats_pub` every `interval_s`, and once
more at the end with `final: true` and the run report. Tools (`medstream top`, `profile`,
`prometheus`) subscribe; a late subscriber has the whole picture at the next message.

Message: two parts, the topic `medstream.stats` and a UTF-8 JSON object

    {"v": 1, "pipeline": NAME, "budget_ms": B, "stages": [{"id": ID, "kind": KIND}, ...],
     "now_ns": T, "final": false, "exit": "", "snapshots": [SNAPSHOT, ...], "report": null}

where SNAPSHOT is `StageStats.snapshot()`. Stages run without a supervisor (`medstream stage`)
can be tapped by binding their `stats_endpoint` instead (`SnapshotCollector`).
"""

from __future__ import annotations

import json
import time
from contextlib import suppress
from typing import Any

import zmq

from engines.schema import typed

from .snapshot import Published
from .transport import ensure_ipc_dir

TOPIC = b"medstream.stats"
VERSION = 1


class StatsMessageError(ValueError):
    """A stats message or snapshot that is not what this module writes."""


def check_snapshot(snap: Any) -> dict[str, Any]:
    """The snapshot if it fits `Published` (stream/snapshot.py), else StatsMessageError."""
    typed(snap, Published, "snapshot", StatsMessageError)
    return snap


class SnapshotStore:
    """The newest snapshot per (stage, pid)."""

    def __init__(self) -> None:
        self.snapshots: dict[tuple[str, int], dict[str, Any]] = {}

    def add(self, snap: dict[str, Any]) -> None:
        check_snapshot(snap)
        key = (snap["stage"], snap["pid"])
        old = self.snapshots.get(key)
        if old is None or snap["now_ns"] >= old["now_ns"]:
            self.snapshots[key] = snap

    def values(self) -> list[dict[str, Any]]:
        return list(self.snapshots.values())


class StatsRelay:
    """Publishes the supervisor's snapshots for tools, at a steady rate, never blocking."""

    def __init__(
        self,
        endpoint: str,
        pipeline: str,
        budget_ms: float,
        stages: list[dict[str, str]],
        interval_s: float = 0.5,
    ):
        self.head = {"v": VERSION, "pipeline": pipeline, "budget_ms": budget_ms, "stages": stages}
        self.interval_s = interval_s
        self.next_t = 0.0
        self.ctx = zmq.Context()  # its own: it outlives the supervisor's sockets by the report
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, 8)
        self.sock.setsockopt(zmq.LINGER, 1000)
        try:
            ensure_ipc_dir(endpoint)
            self.sock.bind(endpoint)
        except (zmq.ZMQError, OSError):
            self.close()
            raise

    def maybe_publish(self, snapshots: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        if now >= self.next_t:
            self.next_t = now + self.interval_s
            self.publish(snapshots)

    def publish(
        self,
        snapshots: list[dict[str, Any]],
        final: bool = False,
        exit_reason: str = "",
        report: dict[str, Any] | None = None,
    ) -> None:
        body = dict(
            self.head,
            now_ns=time.time_ns(),
            final=final,
            exit=exit_reason,
            snapshots=snapshots,
            report=report,
        )
        # a subscriber that is not reading: the next message supersedes this one
        with suppress(zmq.Again):
            self.sock.send_multipart([TOPIC, json.dumps(body).encode()], zmq.NOBLOCK)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def decode_message(parts: list[bytes]) -> dict[str, Any]:
    """Parse and check one stats-channel message; StatsMessageError if it is not one."""
    if len(parts) != 2 or parts[0] != TOPIC:
        raise StatsMessageError("not a medstream.stats message")
    try:
        msg = json.loads(parts[1])
    except ValueError as e:
        raise StatsMessageError(f"stats message is not JSON: {e}") from None
    if not isinstance(msg, dict) or msg.get("v") != VERSION:
        raise StatsMessageError(
            f"stats message version {msg.get('v') if isinstance(msg, dict) else '?'!r} is not {VERSION}"
        )
    if not isinstance(msg.get("snapshots"), list) or not isinstance(msg.get("stages"), list):
        raise StatsMessageError("stats message without 'snapshots' or 'stages' lists")
    for snap in msg["snapshots"]:
        check_snapshot(snap)
    return msg


class StatsSubscriber:
    """A tool's end of the channel: `recv(timeout_ms)` -> the next valid message or None.

    Malformed messages are counted in `invalid`, never raised."""

    def __init__(self, ctx: zmq.Context, endpoint: str):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 16)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.sock.connect(endpoint)
        self.invalid = 0

    def recv(self, timeout_ms: int) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(remaining, zmq.POLLIN):
                return None
            try:
                return decode_message(self.sock.recv_multipart())
            except StatsMessageError:
                self.invalid += 1

    def close(self) -> None:
        self.sock.close()


class SnapshotCollector:
    """Stands in for the supervisor when stages run on their own: binds their stats endpoint
    (PULL) and turns what they push into the same messages a `StatsSubscriber` returns."""

    def __init__(self, ctx: zmq.Context, endpoint: str, pipeline: str = "", budget_ms: float = 0.0):
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.store = SnapshotStore()
        self.head = {"v": VERSION, "pipeline": pipeline, "budget_ms": budget_ms}
        self.invalid = 0

    def recv(self, timeout_ms: int) -> dict[str, Any] | None:
        """Collect for up to `timeout_ms`; the current picture, or None if nothing came."""
        got = False
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(remaining, zmq.POLLIN):
                break
            try:
                self.store.add(json.loads(self.sock.recv()))
                got = True
            except (ValueError, StatsMessageError):
                self.invalid += 1
        if not got:
            return None
        snaps = self.store.values()
        stages = {s["stage"]: s.get("kind", "") for s in snaps}
        return dict(
            self.head,
            stages=[{"id": k, "kind": v} for k, v in stages.items()],
            now_ns=time.time_ns(),
            final=False,
            exit="",
            snapshots=snaps,
            report=None,
        )

    def close(self) -> None:
        self.sock.close()
