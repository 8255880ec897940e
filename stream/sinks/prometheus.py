"""Prometheus adapter: the stats channel's snapshots as a text exposition, served over HTTP.

Not part of the pipeline's core: `medstream prometheus` (tools/) subscribes to the supervisor's
stats channel and serves the newest exposition at http://HOST:PORT/metrics. Counters end in
`_total`; latencies are histograms in seconds whose bucket edges include the pipeline budget;
labels are only `pipeline`, `stage` and (for drops) `reason`, never per frame. A pipeline of
several streams also gets `medstream_stream_*` series with a `stream` label (frames, drops,
glass-to-glass per stream and stage); with one stream they are left out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stream.histogram import Histogram
from stream.report import StageTotals, totals_from_snapshots
from stream.stats import GLASS_MS, OVERLAY_AGE_MS, QUEUE_MS, STAGE_MS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BASE_EDGES_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)

COUNTERS = (  # stats counter -> (metric, help)
    ("in", "medstream_frames_in_total", "Frames a stage received."),
    ("out", "medstream_frames_out_total", "Frames a stage handed on (render: to its sinks)."),
    ("captured", "medstream_frames_captured_total", "Frames a source stage captured."),
    (
        "budget_misses",
        "medstream_budget_misses_total",
        "Frames handed to the sinks after their deadline.",
    ),
    (
        "stage_overruns",
        "medstream_stage_overruns_total",
        "Frames a stage took longer on than its stage budget.",
    ),
    (
        "shm_inline",
        "medstream_shm_inline_total",
        "Frames sent inline because every shared-memory slot was in use.",
    ),
)
STREAM_COUNTERS = (  # per-stream stats counter -> (metric, help)
    ("captured", "medstream_stream_frames_captured_total", "Frames a source captured, per stream."),
    ("in", "medstream_stream_frames_in_total", "Frames a stage received, per stream."),
    ("out", "medstream_stream_frames_out_total", "Frames a stage handed on, per stream."),
    (
        "budget_misses",
        "medstream_stream_budget_misses_total",
        "Frames handed to the sinks after their deadline, per stream.",
    ),
)
HISTOGRAMS = (
    (STAGE_MS, "medstream_stage_seconds", "Time a stage spent on a frame."),
    (QUEUE_MS, "medstream_queue_seconds", "Time a frame waited on the link into a stage."),
    (
        GLASS_MS,
        "medstream_glass_to_glass_seconds",
        "Capture to rendered frame handed to the sinks.",
    ),
    (
        OVERLAY_AGE_MS,
        "medstream_overlay_age_seconds",
        "Passthrough render: age of the overlay drawn.",
    ),
)


def bucket_edges(budget_ms: float) -> list[float]:
    """Histogram bucket upper edges in seconds: fixed ones plus the budget (and half of it)."""
    edges = set(BASE_EDGES_S)
    if budget_ms > 0:
        edges.update({round(budget_ms / 1000.0, 6), round(budget_ms / 2000.0, 6)})
    return sorted(edges)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}"


def _num(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def _histogram_lines(
    name: str, labels: dict[str, str], h: Histogram, edges: Iterable[float]
) -> list[str]:
    lines = []
    for edge in edges:
        le = {**labels, "le": _num(edge)}
        lines.append(f"{name}_bucket{_labels(**le)} {h.count_at_most(edge * 1000.0)}")
    lines.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {h.count}")
    lines.append(f"{name}_sum{_labels(**labels)} {_num(h.total_ms / 1000.0)}")
    lines.append(f"{name}_count{_labels(**labels)} {h.count}")
    return lines


def exposition(msg: dict[str, Any]) -> str:
    """The text exposition of one stats-channel message (see `stream.stats_relay`)."""
    pipeline = str(msg.get("pipeline", ""))
    totals = totals_from_snapshots(msg["snapshots"])
    edges = bucket_edges(float(msg.get("budget_ms") or 0.0))
    out: list[str] = [
        "# HELP medstream_budget_seconds The pipeline's per-frame latency budget.",
        "# TYPE medstream_budget_seconds gauge",
        f"medstream_budget_seconds{_labels(pipeline=pipeline)} {_num(float(msg.get('budget_ms') or 0) / 1000)}",
    ]
    for key, name, help_text in COUNTERS:
        rows = [(sid, t.counters[key]) for sid, t in totals.items() if key in t.counters]
        if not rows:
            continue
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        out += [f"{name}{_labels(pipeline=pipeline, stage=sid)} {n}" for sid, n in rows]
    out += [
        "# HELP medstream_drops_total Frames dropped, by stage and reason.",
        "# TYPE medstream_drops_total counter",
    ]
    for sid, t in totals.items():
        for reason, n in sorted(t.drops.items()):
            out.append(
                f"medstream_drops_total{_labels(pipeline=pipeline, stage=sid, reason=reason)} {n}"
            )
    out += [
        "# HELP medstream_fps Frames a stage hands on per second, over its run.",
        "# TYPE medstream_fps gauge",
    ]
    out += [
        f"medstream_fps{_labels(pipeline=pipeline, stage=sid)} {_num(t.fps())}"
        for sid, t in totals.items()
    ]
    for key, name, help_text in HISTOGRAMS:
        hist_rows = [(sid, t.hists[key]) for sid, t in totals.items() if key in t.hists]
        if not hist_rows:
            continue
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for sid, h in hist_rows:
            out += _histogram_lines(name, {"pipeline": pipeline, "stage": sid}, h, edges)
    out += _stream_lines(pipeline, totals, edges)
    return "\n".join(out) + "\n"


def _stream_lines(pipeline: str, totals: dict[str, StageTotals], edges: list[float]) -> list[str]:
    """`medstream_stream_*`: frames, drops and glass-to-glass per stream (several streams only)."""
    streams = sorted({x for t in totals.values() for x in t.streams})
    if len(streams) < 2:
        return []
    out: list[str] = []
    for key, name, help_text in STREAM_COUNTERS:
        rows = [
            (sid, x, t.streams[x].counters[key])
            for sid, t in totals.items()
            for x in streams
            if x in t.streams and key in t.streams[x].counters
        ]
        if rows:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            out += [
                f"{name}{_labels(pipeline=pipeline, stage=sid, stream=x)} {n}" for sid, x, n in rows
            ]
    out += [
        "# HELP medstream_stream_drops_total Frames dropped, by stage, stream and reason.",
        "# TYPE medstream_stream_drops_total counter",
    ]
    for sid, t in totals.items():
        for x in streams:
            for reason, n in sorted(t.streams[x].drops.items() if x in t.streams else ()):
                labels = _labels(pipeline=pipeline, stage=sid, stream=x, reason=reason)
                out.append(f"medstream_stream_drops_total{labels} {n}")
    name = "medstream_stream_glass_to_glass_seconds"
    hist_rows = [
        (sid, x, t.streams[x].hists[GLASS_MS])
        for sid, t in totals.items()
        for x in streams
        if x in t.streams and GLASS_MS in t.streams[x].hists
    ]
    if hist_rows:
        out += [
            f"# HELP {name} Capture to rendered frame handed to the sinks, per stream.",
            f"# TYPE {name} histogram",
        ]
        for sid, x, h in hist_rows:
            out += _histogram_lines(name, {"pipeline": pipeline, "stage": sid, "stream": x}, h, edges)
    return out


class MetricsServer:
    """Serves the newest exposition at /metrics from a background thread."""

    def __init__(self, host: str, port: int):
        self._text = b"# no stats received yet\n"
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                with server._lock:
                    body = server._text
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="prometheus", daemon=True
        )
        self.thread.start()

    def update(self, text: str) -> None:
        with self._lock:
            self._text = text.encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=2.0)
