"""One thread per process that authenticates CURVE peers (ZAP) and watches handshakes.

- ZAP (RFC 27): pyzmq's `zmq.auth.Authenticator` on `inproc://zeromq.zap.01` of the process's
  context (one per context), with one CURVE allow-list per ZAP domain (one domain per link): a
  peer connecting to a CURVE server socket is accepted only if its public key is in the list of
  that socket's domain. Every refusal is counted (`auth_refused:<domain>`) and the first from
  each key is logged.
- Handshake monitor: ZeroMQ socket monitor events on every secured socket, so a failed handshake
  is seen on both sides: a server sees a peer that does not speak CURVE or has the wrong server
  key; a client sees the server refuse its key. Counted as `handshake_failed:<domain>`.

Counts are taken with `take_counts()` from the stage's own thread (the stats are not shared).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter

import zmq
from zmq.auth import Authenticator
from zmq.utils.monitor import parse_monitor_message

POLL_MS = 100
MAX_LOGGED_PEERS = 256  # distinct refused keys logged by name; after that only counted
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)


class AuthWatch(Authenticator):
    """The ZAP handler and handshake monitor of one process (see the module doc).

    It is its own pyzmq credentials provider (`callback`) for every link domain."""

    def __init__(self, ctx: zmq.Context, log: logging.Logger):
        super().__init__(ctx, log=log)
        self._lock = threading.Lock()
        self._allow: dict[str, frozenset[bytes]] = {}  # domain -> Z85 public keys
        self._counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self._pending: list[tuple[zmq.Socket, str, str]] = []  # monitor socket, domain, role
        self._address = ""  # of the ZAP request being answered (for the refusal log)
        self._closing = False
        try:
            self.start()
        except zmq.ZMQError as e:
            self.stop()
            raise RuntimeError(f"cannot start the ZAP handler (one per process): {e}") from None
        self._thread = threading.Thread(target=self._run, name="auth-watch", daemon=True)
        self._thread.start()

    # -- configuration (any thread) ---------------------------------------------------------
    def allow_keys(self, domain: str, public_keys_z85: frozenset[bytes]) -> None:
        """Accept exactly these (Z85) public keys on sockets whose zap_domain is `domain`."""
        with self._lock:
            self._allow[domain] = public_keys_z85
        self.configure_curve_callback(domain, credentials_provider=self)

    def watch(self, sock: zmq.Socket, domain: str, role: str) -> None:
        """Count and log failed handshakes on `sock` (call before it binds or connects)."""
        monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
        with self._lock:
            self._pending.append((monitor, domain, role))

    def take_counts(self) -> Counter[str]:
        """Counts since the last call: auth_refused:<domain>, handshake_failed:<domain>, ..."""
        with self._lock:
            out, self._counts = self._counts, Counter()
        return out

    def close(self) -> None:
        self._closing = True
        self._thread.join(timeout=2.0)

    # -- the thread -------------------------------------------------------------------------
    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode(errors="replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's CURVE credentials check: `key` (Z85) against the allow-list of `domain`."""
        with self._lock:
            allowed = key in self._allow.get(domain, frozenset())
            self._counts[f"auth_{'accepted' if allowed else 'refused'}:{domain}"] += 1
            if allowed or not self._first(domain, key.decode()):
                return allowed
        self.log.warning(
            "refused a peer on %s from %s: public key %s is not in the allow-list "
            "(further refusals of this key are only counted)",
            domain, self._address or "?", key.decode(),
        )
        return False

    def _first(self, domain: str, what: str) -> bool:
        """Whether to log (`domain`, `what`): the first time, up to MAX_LOGGED_PEERS (locked)."""
        if (domain, what) in self._logged or len(self._logged) >= MAX_LOGGED_PEERS:
            return False
        self._logged.add((domain, what))
        return True

    def _run(self) -> None:
        loop = asyncio.new_event_loop()  # pyzmq's handler is a coroutine (it never waits here)
        poller = zmq.Poller()
        poller.register(self.zap_socket, zmq.POLLIN)
        monitors: dict[zmq.Socket, tuple[str, str]] = {}
        try:
            while not self._closing:
                with self._lock:
                    pending, self._pending = self._pending, []
                for monitor, domain, role in pending:
                    monitors[monitor] = (domain, role)
                    poller.register(monitor, zmq.POLLIN)
                for sock, _ in poller.poll(POLL_MS):
                    if sock is self.zap_socket:
                        loop.run_until_complete(self.handle_zap_message(sock.recv_multipart()))
                    else:
                        self._on_event(sock, *monitors[sock])
        finally:
            for monitor in monitors:
                monitor.close(linger=0)
            with self._lock:
                for monitor, _, _ in self._pending:
                    monitor.close(linger=0)
                self._pending = []
            self.stop()
            loop.close()

    def _on_event(self, monitor: zmq.Socket, domain: str, role: str) -> None:
        try:
            event = parse_monitor_message(monitor.recv_multipart())
        except (zmq.ZMQError, ValueError):
            return
        what = event["event"]
        if what == zmq.EVENT_MONITOR_STOPPED:
            return
        with self._lock:
            if what == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._counts[f"handshakes:{domain}"] += 1
                return
            self._counts[f"handshake_failed:{domain}"] += 1
            if not self._first(domain, f"event {what}"):
                return
        endpoint = bytes(event.get("endpoint", b"")).decode(errors="replace")
        if role == "client" and what == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = "the server refused this stage's key (is it in the link's allow-list?)"
        elif role == "client":
            why = "the server does not speak CURVE with this server key (wrong server key?)"
        elif what == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = "a peer's key was refused (not in the allow-list)"
        else:
            why = "a peer failed the CURVE handshake (no CURVE, or a wrong server key)"
        self.log.warning("handshake failed on %s (%s): %s; further failures only counted",
                         domain, endpoint, why)
