"""LatestServer: a TCP server that sends every client only the newest item, as bytes.

`put(item)` swaps a reference under a lock and returns at once. A packer thread turns the newest
item into bytes (only while a client is connected, once per item, shared by all clients); one
thread per client sends the newest packed bytes it has not sent yet. A client that is slower than
the items skips to the newest; one that takes no bytes for `send_timeout_s` is disconnected.
Bytes a client sends are read and discarded. Nothing here can block `put`.

Counted (`counts()`): `no_client` (items put while nobody was connected), `superseded` (items
replaced before they were packed), `client_skipped` (packed items a slow client never got),
`pack_error`, `clients_refused` (over `max_clients`), `sent` (item-client sends).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from typing import Any

ACCEPT_POLL_S = 0.1
WAIT_SLICE_S = 0.1
CLOSE_JOIN_S = 2.0


class LatestServer:
    def __init__(
        self,
        host: str,
        port: int,
        pack: Callable[[Any], bytes],
        name: str,
        max_clients: int = 4,
        send_timeout_s: float = 2.0,
    ) -> None:
        self.pack = pack
        self.name = name
        self.max_clients = max_clients
        self.send_timeout_s = send_timeout_s
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(8)
        except OSError:
            self._listener.close()
            raise
        self._listener.settimeout(ACCEPT_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._item: Any = None
        self._item_version = 0
        self._packed: bytes | None = None
        self._packed_version = 0
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._counts: Counter[str] = Counter()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True),
            threading.Thread(target=self._pack_loop, name=f"{name}-pack", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- producer side ---------------------------------------------------------------------
    def put(self, item: Any) -> None:
        """Make `item` the newest (kept by reference; the caller must not modify it)."""
        with self._cond:
            if not self._clients:
                self._counts["no_client"] += 1
                self._item = None  # nobody to send it to: do not keep it alive
                return
            if self._item is not None:
                self._counts["superseded"] += 1
            self._item = item
            self._item_version += 1
            self._cond.notify_all()

    @property
    def clients(self) -> int:
        with self._cond:
            return len(self._clients)

    def counts(self) -> dict[str, int]:
        with self._cond:
            return dict(self._counts)

    # -- threads ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            with self._cond:
                if self._closed or len(self._clients) >= self.max_clients:
                    self._counts["clients_refused"] += 1
                    conn.close()
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(self.send_timeout_s)
                thread = threading.Thread(
                    target=self._client_loop, args=(conn,), name=f"{self.name}-client", daemon=True
                )
                self._clients[conn] = thread
            thread.start()

    def _pack_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._item is None:
                    self._cond.wait(WAIT_SLICE_S)
                if self._closed:
                    return
                item, version, self._item = self._item, self._item_version, None
            try:
                data = self.pack(item)
            except Exception:  # a bad frame must not end the server; it is counted
                with self._cond:
                    self._counts["pack_error"] += 1
                continue
            with self._cond:
                self._packed, self._packed_version = data, version
                self._cond.notify_all()

    def _client_gone(self, conn: socket.socket) -> bool:
        """Read and discard what the client sent; True if it closed the connection."""
        while True:
            try:
                readable, _, _ = select.select([conn], [], [], 0)
                if not readable:
                    return False
                if not conn.recv(65536):
                    return True
            except OSError:
                return True

    def _client_loop(self, conn: socket.socket) -> None:
        sent_version = self._packed_version  # a new client waits for the next frame
        try:
            while not self._closed:
                with self._cond:
                    if not self._closed and self._packed_version <= sent_version:
                        self._cond.wait(WAIT_SLICE_S)
                    if self._closed:
                        return
                    version, data = self._packed_version, self._packed
                if self._client_gone(conn):
                    return
                if version <= sent_version or data is None:
                    continue
                try:
                    conn.sendall(data)
                except OSError:  # timed out (stalled client) or reset
                    return
                with self._cond:
                    if sent_version and version > sent_version + 1:
                        self._counts["client_skipped"] += version - sent_version - 1
                    self._counts["sent"] += 1
                sent_version = version
        finally:
            with self._cond:
                self._clients.pop(conn, None)
            conn.close()

    def close(self) -> None:
        """Stop accepting, disconnect every client, join the threads (bounded)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            clients = dict(self._clients)
            self._cond.notify_all()
        self._listener.close()
        for conn in clients:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + CLOSE_JOIN_S
        for t in [*self._threads, *clients.values()]:
            t.join(max(0.0, deadline - time.monotonic()))
