"""ViewerSink: a browser viewer over HTTP (MJPEG stream, snapshot JPEG, live stats JSON).

Every stream (`Frame.stream`) the sink is handed gets its own latest-frame slot (at most
`MAX_STREAMS`; frames of more are counted as `too_many_streams` drops). Routes: `/` (the page:
one tile per stream, the model panel - the card's notice, whether the model applies to the
image, the class legend, intended use and training data, from the render stage's `model_card`
live stats -, a live chart of glass-to-glass and display latency p50/p99 over the last minute
and drops by reason, and the stats table), `/streams.json` (the streams and their newest
frames), `/stream.mjpg?stream=ID` (multipart/x-mixed-replace; each client gets only the newest
frame; without `stream`, the first stream), `/frame.jpg?stream=ID&after=VERSION` (the newest
frame, waiting up to 5 s for one newer than VERSION; 503 before the first; headers
`X-Frame-Seq`, `X-Frame-Version`, `X-Capture-Ns`), `/stats.json`, and `POST /shown`: the page's
report that a frame is on screen (stream.sinks.shown), from which the render stage records
display latency (capture -> shown in the browser).
The images are patient images and this is plain HTTP: `host` is 127.0.0.1 by default, and any
other address needs `token_file`: every request must then present that token (`?token=...`,
`Authorization: Bearer ...` or `X-Medstream-Token`), compared in constant time; refusals are
counted. The token keeps other users of the network out; it is no encryption (put a TLS proxy
in front when the network is not trusted).
"""

from __future__ import annotations

import html
import json
import socket
import socketserver
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import numpy as np

from stream.exposure import require_loopback_or, token_matches
from stream.frame import Frame
from stream.sinks.base import SinkBase, SinkError, check_bgr_image
from stream.sinks.latest import LatestJpeg
from stream.sinks.shown import MAX_BODY_BYTES, ShownReports
from stream.sinks.viewer_page import PAGE
from stream.spec import ConfigError, bounded

BOUNDARY = "medstreamframe"
CLIENT_TIMEOUT_S = 5.0  # a client that takes no bytes for this long is disconnected
WAIT_SLICE_S = 0.5  # how often a waiting stream handler checks for close
CLOSE_JOIN_S = 2.0  # close() waits at most this long, in all, for handler threads
MAX_STREAMS = 16  # streams given a slot (tile) each


@dataclass
class ViewerSpec:
    """Config of a `viewer` sink."""

    host: str = bounded("127.0.0.1", doc="address to listen on; off loopback needs token_file")
    port: int = bounded(8080, 0, 65535, doc="TCP port; 0 picks a free one (see the log)")
    jpeg_quality: int = bounded(80, 1, 100, doc="JPEG quality of the stream, 1-100")
    title: str = "medstream"
    token_file: str = bounded(
        "", doc="file holding the access token every request must present (required off loopback)"
    )

    def validate(self, where: str) -> None:
        if not self.host:
            raise ConfigError(f"{where}.host: expected a host name or address, got ''")
        require_loopback_or(
            self.host,
            bool(self.token_file),
            f"{where}.host",
            "set token_file (a file holding a secret token: browsers then open "
            "http://HOST:PORT/?token=TOKEN)",
        )


def read_token(path: str, who: str) -> str:
    """The token in `path` (first line, stripped); SinkError if unreadable or too short."""
    try:
        token = Path(path).read_text().strip().splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as e:
        raise SinkError(f"{who}: cannot read token_file {path}: {e}") from None
    if len(token) < 16:
        raise SinkError(f"{who}: token in {path} is shorter than 16 characters")
    return token


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server that tracks its client sockets and threads, so close() can end
    them (a stalled client would otherwise hold its thread until its socket timeout)."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog (Python's default 5 refused 18 of 100 at once)

    def __init__(self, address: tuple[str, int], sink: ViewerSink) -> None:
        self.sink = sink
        self._track_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._client_threads: set[threading.Thread] = set()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"viewer-{self.sink.stage_id}-client",
            daemon=True,
        )
        with self._track_lock:
            self._connections.add(request)
            self._client_threads.add(thread)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._track_lock:
                self._connections.discard(request)
                self._client_threads.discard(threading.current_thread())

    def connections(self) -> int:
        """Open HTTP connections (stream viewers, and requests in progress)."""
        with self._track_lock:
            return len(self._connections)

    def disconnect_all(self) -> list[threading.Thread]:
        """Shut every client socket down (unblocking its thread); return the threads."""
        with self._track_lock:
            for conn in self._connections:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            return list(self._client_threads)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT_S  # socket timeout for every read and write
    server_version = "medstream-viewer"

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the stream would fill the log."""

    def _presented_token(self, query: str) -> str | None:
        values = parse_qs(query).get("token")
        if values:
            return values[0]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :].strip()
        return self.headers.get("X-Medstream-Token")

    def _authorized(self, query: str) -> bool:
        sink = self.server.sink
        if sink.token and not token_matches(self._presented_token(query), sink.token):
            sink.count_unauthorized()
            self._send(401, "text/plain", b"a valid token is required (?token=...)\n")
            return False
        return True

    def do_GET(self) -> None:
        sink = self.server.sink
        path, _, query = self.path.partition("?")
        try:
            if not self._authorized(query):
                return
            if path == "/":
                self._send(200, "text/html; charset=utf-8", sink.page().encode())
            elif path == "/stats.json":
                self._send(200, "application/json", json.dumps(sink.stats()).encode())
            elif path == "/streams.json":
                self._send(200, "application/json", json.dumps(sink.streams()).encode())
            elif path in ("/frame.jpg", "/stream.mjpg"):
                found = self._slot(query)
                if found is not None:
                    (self._frame if path == "/frame.jpg" else self._stream)(*found, query)
            else:
                self._send(404, "text/plain", f"no such page: {path}\n".encode())
        except OSError:
            pass  # the client went away, stalled past its timeout, or close() cut it off

    def do_POST(self) -> None:
        sink = self.server.sink
        path, _, query = self.path.partition("?")
        try:
            if not self._authorized(query):
                return
            if path != "/shown":
                self._send(404, "text/plain", f"no such page: {path}\n".encode())
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                too_large = length > MAX_BODY_BYTES
                sink.shown.refuse("too_large" if too_large else "invalid")
                self.close_connection = True  # the body is not read
                self._send(413 if too_large else 411, "text/plain", b"a small JSON report\n")
                return
            reason = sink.shown.report(self.rfile.read(length))
            code = 204 if not reason else 429 if reason == "rate" else 400
            self._send(code, "text/plain", reason.encode())
        except OSError:
            pass

    def _slot(self, query: str) -> tuple[str, LatestJpeg] | None:
        """The stream `?stream=` names (default: the first) and its slot; None after a 404."""
        names = parse_qs(query).get("stream")
        found = self.server.sink.slot_of(names[0] if names else None)
        if found is None:
            self._send(404, "text/plain", b"no such stream (see /streams.json)\n")
        return found

    def _send(
        self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _frame(self, stream: str, slot: LatestJpeg, query: str) -> None:
        try:
            after = max(0, int(parse_qs(query).get("after", ["0"])[0]))
        except ValueError:
            after = 0
        jpeg = slot.next_jpeg(after=after, timeout_s=CLIENT_TIMEOUT_S) if slot.version else None
        if jpeg is None:
            if slot.version:  # nothing newer within the wait
                self._send(204, "text/plain", b"")
            else:
                self._send(503, "text/plain", b"no frame yet: the viewer has not received one\n")
            return
        self.server.sink.shown.served(stream, jpeg.seq, jpeg.capture_ns)
        headers = {
            "X-Frame-Seq": str(jpeg.seq),
            "X-Frame-Version": str(jpeg.version),
            "X-Capture-Ns": str(jpeg.capture_ns),
        }
        self._send(200, "image/jpeg", jpeg.data, headers)

    def _stream(self, stream: str, slot: LatestJpeg, query: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seen = 0
        while not self.server.sink.closed:
            jpeg = slot.next_jpeg(after=seen, timeout_s=WAIT_SLICE_S)
            if jpeg is None:
                continue
            seen = jpeg.version
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg.data)}\r\nX-Frame-Seq: {jpeg.seq}\r\n"
                f"X-Capture-Ns: {jpeg.capture_ns}\r\n\r\n"
            )
            self.wfile.write(head.encode() + jpeg.data + b"\r\n")
            self.wfile.flush()


class ViewerSink(SinkBase):
    """Serve the newest rendered frame and live stats to browsers (see the module doc)."""

    kind = "viewer"

    def __init__(self, spec: ViewerSpec, stage_id: str, source_fps: float | None = None) -> None:
        super().__init__(stage_id, source_fps)
        self.spec = spec
        self.slots: dict[str, LatestJpeg] = {}  # stream -> its newest frame, in arrival order
        self.first = LatestJpeg(spec.jpeg_quality)  # the first stream's (served before it came)
        self.shown = ShownReports()
        self._too_many = 0
        self._lock = threading.Lock()
        self._written = 0
        self._last: dict[str, tuple[int, int, int]] = {}  # stream -> frames, seq, capture_ns
        self._unauthorized = 0
        self.token = read_token(spec.token_file, self.who) if spec.token_file else ""
        try:
            self._server = _Server((spec.host, spec.port), self)
        except OSError as e:
            raise SinkError(
                f"{self.who}: cannot listen on {_url(spec.host, spec.port)}: {e.strerror or e}"
            ) from None
        self.port: int = self._server.server_address[1]
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"viewer-{stage_id}",
            daemon=True,
        )
        self._serve_thread.start()

    @property
    def url(self) -> str:
        return _url(self.spec.host, self.port)

    def _write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Make `image_bgr` the newest frame (kept by reference, encoded only when asked for)."""
        check_bgr_image(image_bgr, self.who)
        with self._lock:
            slot = self.slots.get(frame.stream)
            if slot is None:
                if len(self.slots) >= MAX_STREAMS:
                    self._too_many += 1
                    return
                slot = self.first if not self.slots else LatestJpeg(self.spec.jpeg_quality)
                self.slots[frame.stream] = slot
            self._written += 1
            frames = self._last.get(frame.stream, (0, 0, 0))[0]
            self._last[frame.stream] = (frames + 1, frame.seq, frame.capture_ns)
        slot.put(image_bgr, frame.seq, frame.capture_ns)

    def slot_of(self, stream: str | None) -> tuple[str, LatestJpeg] | None:
        """`stream`'s name and slot (None: the first stream's, even before it came)."""
        with self._lock:
            if stream is None:
                return next(iter(self.slots), ""), self.first
            slot = self.slots.get(stream)
            return None if slot is None else (stream, slot)

    def streams(self) -> dict[str, Any]:
        """What `/streams.json` serves: each stream's frames written, newest seq and capture."""
        with self._lock:
            return {
                "streams": [
                    {"id": sid, "frames": n, "last_seq": seq, "last_capture_ns": cap}
                    for sid, (n, seq, cap) in self._last.items()
                ]
            }

    def take_display_ms(self) -> list[tuple[str, float]]:
        """Capture -> shown latencies the pages reported since the last call: (stream, ms)."""
        return self.shown.take()

    def drops(self) -> dict[str, int]:
        """Frames this sink failed to serve. Frames replaced before anyone looked are normal
        for a viewer and not counted; `stats()` has written vs encoded."""
        with self._lock:
            slots, too_many = list(self.slots.values()), self._too_many
        errors = sum(slot.encode_errors for slot in slots)
        drops = {"encode_error": errors} if errors else {}
        if too_many:
            drops["too_many_streams"] = too_many
        return drops

    def stats(self) -> dict[str, Any]:
        """What `/stats.json` serves."""
        drops = self.drops()
        with self._lock:
            newest = max(self._last.values(), key=lambda v: v[2], default=None)
            return {
                "stage": self.stage_id,
                "title": self.spec.title,
                "source_fps": self.source_fps,
                "viewer": {
                    "frames_written": self._written,
                    "frames_encoded": sum(slot.encoded for slot in self.slots.values()),
                    "streams": list(self.slots),
                    "last_seq": None if newest is None else newest[1],
                    "last_capture_ns": None if newest is None else newest[2],
                    "connections": self._server.connections(),
                    "unauthorized": self._unauthorized,
                    "shown_reports": self.shown.counts(),
                    "drops": drops,
                },
                "stats": self.latest_stats,
            }

    def count_unauthorized(self) -> None:
        with self._lock:
            self._unauthorized += 1

    def page(self) -> str:
        """The HTML page (stream.sinks.viewer_page; it is served only to a request that
        presented the token, so it carries the token on)."""
        query = f"?token={quote(self.token, safe='')}" if self.token else ""
        return PAGE.replace("{query}", query).replace("{title}", html.escape(self.spec.title))

    def _close(self) -> None:
        """Stop serving: end every client, stop the server, join its threads (bounded)."""
        with self._lock:
            slots = [self.first, *self.slots.values()]
        for slot in slots:
            slot.close()
        self._server.shutdown()
        self._serve_thread.join()
        threads = self._server.disconnect_all()
        deadline = time.monotonic() + CLOSE_JOIN_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server.server_close()

