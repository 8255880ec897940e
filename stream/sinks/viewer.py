"""ViewerSink: a browser viewer over HTTP (MJPEG stream, snapshot JPEG, live stats JSON).

Routes: `/` (the page: the live image, the model panel - the card's notice, whether the model
applies to the image, the class legend, intended use and training data, from the render stage's
`model_card` live stats - and the stats table), `/stream.mjpg` (multipart/x-mixed-replace; each client gets only the
newest frame), `/frame.jpg` (the newest frame; 503 before the first), `/stats.json`.
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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import numpy as np

from stream.exposure import require_loopback_or, token_matches
from stream.frame import Frame
from stream.sinks.base import SinkError, check_bgr_image, check_source_fps, json_snapshot
from stream.sinks.latest import LatestJpeg
from stream.spec import ConfigError, bounded

BOUNDARY = "medstreamframe"
CLIENT_TIMEOUT_S = 5.0  # a client that takes no bytes for this long is disconnected
WAIT_SLICE_S = 0.5  # how often a waiting stream handler checks for close
CLOSE_JOIN_S = 2.0  # close() waits at most this long, in all, for handler threads


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
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
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

    def do_GET(self) -> None:
        sink = self.server.sink
        path, _, query = self.path.partition("?")
        try:
            if sink.token and not token_matches(self._presented_token(query), sink.token):
                sink.count_unauthorized()
                self._send(401, "text/plain", b"a valid token is required (?token=...)\n")
                return
            if path == "/":
                self._send(200, "text/html; charset=utf-8", sink.page().encode())
            elif path == "/stats.json":
                self._send(200, "application/json", json.dumps(sink.stats()).encode())
            elif path == "/frame.jpg":
                self._frame()
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._send(404, "text/plain", f"no such page: {path}\n".encode())
        except OSError:
            pass  # the client went away, stalled past its timeout, or close() cut it off

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _frame(self) -> None:
        slot = self.server.sink.slot
        jpeg = slot.next_jpeg(after=0, timeout_s=CLIENT_TIMEOUT_S) if slot.version else None
        if jpeg is None:
            self._send(503, "text/plain", b"no frame yet: the viewer has not received one\n")
            return
        self._send(200, "image/jpeg", jpeg.data)

    def _stream(self) -> None:
        slot = self.server.sink.slot
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
                f"Content-Length: {len(jpeg.data)}\r\nX-Frame-Seq: {jpeg.seq}\r\n\r\n"
            )
            self.wfile.write(head.encode() + jpeg.data + b"\r\n")
            self.wfile.flush()


class ViewerSink:
    """Serve the newest rendered frame and live stats to browsers (see the module doc)."""

    def __init__(self, spec: ViewerSpec, stage_id: str, source_fps: float | None = None) -> None:
        check_source_fps(source_fps, f"viewer sink {stage_id!r}")
        self.spec = spec
        self.stage_id = stage_id
        self.source_fps = source_fps
        self.slot = LatestJpeg(spec.jpeg_quality)
        self.closed = False
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self._written = 0
        self._last_seq: int | None = None
        self._last_capture_ns: int | None = None
        self._unauthorized = 0
        self.token = read_token(spec.token_file, f"viewer sink {stage_id!r}") if spec.token_file else ""
        try:
            self._server = _Server((spec.host, spec.port), self)
        except OSError as e:
            raise SinkError(
                f"viewer sink {stage_id!r}: cannot listen on {_url(spec.host, spec.port)}: "
                f"{e.strerror or e}"
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

    def write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Make `image_bgr` the newest frame (kept by reference, encoded only when asked for)."""
        if self.closed:
            raise RuntimeError(f"viewer sink {self.stage_id!r} is closed")
        check_bgr_image(image_bgr, f"viewer sink {self.stage_id!r}")
        self.slot.put(image_bgr, frame.seq)
        with self._lock:
            self._written += 1
            self._last_seq = frame.seq
            self._last_capture_ns = frame.capture_ns

    def update_stats(self, stats: dict[str, Any]) -> None:
        """Replace the stats shown on the page (must be JSON-able)."""
        snapshot = json_snapshot(stats, f"viewer sink {self.stage_id!r}")
        with self._lock:
            self._stats = snapshot

    def drops(self) -> dict[str, int]:
        """Frames this sink failed to serve. Frames replaced before anyone looked are normal
        for a viewer and not counted; `stats()` has written vs encoded."""
        return {"encode_error": self.slot.encode_errors} if self.slot.encode_errors else {}

    def stats(self) -> dict[str, Any]:
        """What `/stats.json` serves."""
        with self._lock:
            return {
                "stage": self.stage_id,
                "title": self.spec.title,
                "source_fps": self.source_fps,
                "viewer": {
                    "frames_written": self._written,
                    "frames_encoded": self.slot.encoded,
                    "last_seq": self._last_seq,
                    "last_capture_ns": self._last_capture_ns,
                    "connections": self._server.connections(),
                    "unauthorized": self._unauthorized,
                    "drops": self.drops(),
                },
                "stats": self._stats,
            }

    def count_unauthorized(self) -> None:
        with self._lock:
            self._unauthorized += 1

    def page(self) -> str:
        """The HTML page: the live stream and a stats table polled from /stats.json (it is
        served only to a request that presented the token, so it carries the token on)."""
        query = f"?token={quote(self.token, safe='')}" if self.token else ""
        return _PAGE.replace("{query}", query).replace("{title}", html.escape(self.spec.title))

    def close(self) -> None:
        """Stop serving: end every client, stop the server, join its threads (bounded)."""
        if self.closed:
            return
        self.closed = True
        self.slot.close()
        self._server.shutdown()
        self._serve_thread.join()
        threads = self._server.disconnect_all()
        deadline = time.monotonic() + CLOSE_JOIN_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server.server_close()


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
header { padding: 6px 12px; background: #222; font-weight: 600; }
main { display: flex; gap: 12px; padding: 12px; align-items: flex-start; }
img { max-width: 75vw; max-height: 90vh; background: #000; }
table { border-collapse: collapse; min-width: 260px; }
td { padding: 2px 8px; border-bottom: 1px solid #333; font-variant-numeric: tabular-nums; }
td:first-child { color: #999; }
#status { color: #f55; }
aside { max-width: 300px; }
#notice { color: #fb0; font-weight: 600; margin-bottom: 8px; }
#gate { color: #f55; font-weight: 600; margin-bottom: 8px; }
#legend { list-style: none; padding: 0; margin: 0 0 8px 0; }
#legend li { margin: 2px 0; }
#confidence-bar { height: 10px; width: 160px; margin: 2px 0 8px 0; border: 1px solid #555; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
  vertical-align: -1px; border: 1px solid #555; }
dt { color: #999; } dd { margin: 0 0 6px 0; }
</style></head>
<body><header>{title} <span id="status"></span></header>
<main><img id="live" src="/stream.mjpg{query}" alt="live stream">
<aside id="model" hidden><div id="notice"></div><div id="gate"></div>
<ul id="legend"></ul>
<div id="confidence" hidden>confidence 0 - 1<div id="confidence-bar"></div></div>
<dl><dt>model</dt><dd id="model-name"></dd><dt>intended use</dt><dd id="intended-use"></dd>
<dt>training data</dt><dd id="training-data"></dd></dl></aside>
<table id="stats"></table></main>
<script>
function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    if (!prefix && k === "model_card") continue;  // shown in the model panel
    const key = prefix ? prefix + "." + k : k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v]);
  }
  return out;
}
function text(id, value) { document.getElementById(id).textContent = value || ""; }
function showModel(card, model) {
  const box = document.getElementById("model");
  box.hidden = !card;
  if (!card) return;
  text("notice", card.notice);
  text("model-name", model);
  text("intended-use", card.intended_use);
  text("training-data", card.training_data);
  const g = card.applicability;
  text("gate", g && !g.applicable ? "Model not applicable to this image (score " +
    g.score + " > threshold " + g.threshold + ")" : "");
  const stops = (card.confidence_colors || []).filter((c) => /^#[0-9a-f]{6}$/i.test(c));
  document.getElementById("confidence").hidden = stops.length < 2;
  if (stops.length >= 2) document.getElementById("confidence-bar").style.background =
    "linear-gradient(to right, " + stops.join(", ") + ")";
  const legend = document.getElementById("legend");
  legend.replaceChildren(...(card.labels || []).map((l) => {
    const li = document.createElement("li"), sw = document.createElement("span");
    sw.className = "swatch";
    if (/^#[0-9a-f]{6}$/i.test(l.color)) sw.style.background = l.color;
    li.appendChild(sw); li.appendChild(document.createTextNode(l.name)); return li;
  }));
}
async function poll() {
  try {
    const r = await fetch("/stats.json{query}", {cache: "no-store"});
    const s = await r.json();
    const rows = flatten(s.stats, "", []).concat(flatten(s.viewer, "viewer", []));
    showModel(s.stats.model_card, s.stats.model);
    const t = document.getElementById("stats");
    t.replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      for (const x of [k, v]) { const td = document.createElement("td");
        td.textContent = String(x); tr.appendChild(td); }
      return tr;
    }));
    document.getElementById("status").textContent = "";
  } catch (e) {
    document.getElementById("status").textContent = "(disconnected)";
  }
}
const img = document.getElementById("live");
const Q = "{query}";
img.onerror = () => setTimeout(() => {
  img.src = "/stream.mjpg" + (Q ? Q + "&" : "?") + "t=" + Date.now(); }, 1000);
setInterval(poll, 1000); poll();
</script></body></html>
"""
