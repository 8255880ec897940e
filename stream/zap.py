"""One thread per process that authenticates CURVE peers (ZAP) and watches handshakes.

- ZAP handler (RFC 27) on `inproc://zeromq.zap.01` of the process's context (only one per
  context can exist): a peer connecting to a CURVE server socket is accepted only if its public
  key is in the allow-list of that socket's ZAP domain (one domain per link). Every refusal is
  counted (`auth_refused:<domain>`) and the first from each key is logged.
- Handshake monitor: ZeroMQ socket monitor events on every secured socket, so a failed handshake
  is seen on both sides: a server sees a peer that does not speak CURVE or has the wrong server
  key; a client sees the server refuse its key. Counted as `handshake_failed:<domain>`.

Counts are taken with `take_counts()` from the stage's own thread (the stats are not shared).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
POLL_MS = 100
MAX_LOGGED_PEERS = 256  # distinct refused keys logged by name; after that only counted
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)


class AuthWatch:
    """The ZAP handler and handshake monitor of one process (see the module doc)."""

    def __init__(self, ctx: zmq.Context, log: logging.Logger):
        self.log = log
        self._lock = threading.Lock()
        self._allow: dict[bytes, frozenset[bytes]] = {}  # domain -> raw 32-byte public keys
        self._counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self._pending: list[tuple[zmq.Socket, str, str]] = []  # monitor socket, domain, role
        self._closing = False
        self._zap = ctx.socket(zmq.REP)
        self._zap.setsockopt(zmq.LINGER, 0)
        try:
            self._zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as e:
            self._zap.close()
            raise RuntimeError(f"cannot start the ZAP handler (one per process): {e}") from None
        self._thread = threading.Thread(target=self._run, name="auth-watch", daemon=True)
        self._thread.start()

    # -- configuration (any thread) ---------------------------------------------------------
    def allow(self, domain: str, public_keys_z85: frozenset[bytes]) -> None:
        """Accept exactly these (Z85) public keys on sockets whose zap_domain is `domain`."""
        raw = frozenset(z85.decode(k) for k in public_keys_z85)
        with self._lock:
            self._allow[domain.encode()] = raw

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
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        monitors: dict[zmq.Socket, tuple[str, str]] = {}
        try:
            while not self._closing:
                with self._lock:
                    pending, self._pending = self._pending, []
                for monitor, domain, role in pending:
                    monitors[monitor] = (domain, role)
                    poller.register(monitor, zmq.POLLIN)
                for sock, _ in poller.poll(POLL_MS):
                    if sock is self._zap:
                        self._answer(sock.recv_multipart())
                    else:
                        self._on_event(sock, *monitors[sock])
        finally:
            for monitor in monitors:
                monitor.close(linger=0)
            with self._lock:
                for monitor, _, _ in self._pending:
                    monitor.close(linger=0)
                self._pending = []
            self._zap.close()

    def _answer(self, request: list[bytes]) -> None:
        if len(request) < 6:  # not a ZAP request: libzmq never sends one; answer nothing useful
            self._zap.send_multipart([ZAP_VERSION, b"", b"500", b"malformed request", b"", b""])
            return
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        key = credentials[0] if mechanism == b"CURVE" and credentials else b""
        with self._lock:
            allowed = key in self._allow.get(domain, frozenset())
            name = domain.decode(errors="replace")
            if allowed:
                self._counts[f"auth_accepted:{name}"] += 1
            else:
                self._counts[f"auth_refused:{name}"] += 1
                self._log_refusal(name, address, mechanism, key)
        code, text = (b"200", b"OK") if allowed else (b"400", b"key not in the allow-list")
        self._zap.send_multipart([version, request_id, code, text, b"", b""])

    def _log_refusal(self, domain: str, address: bytes, mechanism: bytes, key: bytes) -> None:
        who = z85.encode(key).decode() if len(key) == 32 else f"({mechanism.decode(errors='replace')})"
        if (domain, who) in self._logged or len(self._logged) >= MAX_LOGGED_PEERS:
            return
        self._logged.add((domain, who))
        self.log.warning(
            "refused a peer on %s from %s: public key %s is not in the allow-list "
            "(further refusals of this key are only counted)",
            domain,
            address.decode(errors="replace") or "?",
            who,
        )

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
            key = (domain, f"event {what}")
            if key in self._logged or len(self._logged) >= MAX_LOGGED_PEERS:
                return
            self._logged.add(key)
        raw_endpoint = event.get("endpoint", b"")
        endpoint = (
            raw_endpoint.decode(errors="replace")
            if isinstance(raw_endpoint, bytes)
            else str(raw_endpoint)
        )
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
