"""Fixtures that tear down what they open: a ZeroMQ context, link ends, a folder for ipc sockets.

Links in tests never guess a free port: an in-process test uses `inproc://` (or tcp bound on
port 0, the real port read back from the socket), and a stage configured by a YAML-like dict
gets ipc endpoints in its own `ipc_dir`. Process-spawning and long tests are marked `slow`
(`make test-fast` leaves them out).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import zmq

from stream.clock import Clock
from stream.transport import LinkSpec

from .helpers import ANY_PORT, LinkEnds, OpenLink, inproc_endpoint, ipc_endpoint, open_link


@pytest.fixture
def zmq_ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context; on teardown every socket still open on it is closed with linger 0
    and the context terminated, so a failing test cannot hang the run on `term()`."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def ipc_dir(tmp_path: Path) -> Path:
    """A folder for ipc socket files (short enough for a unix socket path)."""
    folder = tmp_path / "ipc"
    folder.mkdir()
    ipc_endpoint(folder, "probe")  # fails here, naming the path, if the folder is too deep
    return folder


@pytest.fixture
def link(zmq_ctx: zmq.Context) -> Iterator[OpenLink]:
    """`link(pattern, mode, transport="inproc" | "tcp", ...)`: both ends of a link on the
    test's context (tcp: bound on port 0, the real port read back); closed on teardown."""
    opened: list[LinkEnds] = []

    def open_(
        pattern: Literal["pubsub", "pushpull"] = "pushpull",
        mode: Literal["live", "lossless"] = "lossless",
        transport: Literal["inproc", "tcp"] = "inproc",
        hwm: int = 0,
        bind: Literal["producer", "consumer"] = "producer",
        tx_clock: Clock | None = None,
        rx_clock: Clock | None = None,
    ) -> LinkEnds:
        endpoint = inproc_endpoint() if transport == "inproc" else ANY_PORT
        spec = LinkSpec(endpoint=endpoint, pattern=pattern, mode=mode, hwm=hwm, bind=bind)
        ends = open_link(zmq_ctx, spec, tx_clock, rx_clock)
        opened.append(ends)
        return ends

    yield open_
    for ends in opened:
        ends.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound by the test (so nothing else can
    listen there) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
