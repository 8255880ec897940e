"""Prometheus adapter: the stats channel's snapshots as metric families, served over HTTP.

Not part of the pipeline's core: `medstream prometheus` (tools/) subscribes to the supervisor's
stats channel and serves the newest message at http://HOST:PORT/metrics through
`prometheus_client` (a custom collector; pip install 'medstream[prometheus]'). Counters end in
`_total`; latencies are histograms in seconds whose bucket edges include the pipeline budget;
labels are only `pipeline`, `stage` and (for drops) `reason`, never per frame. A pipeline of
several streams also gets `medstream_stream_*` series with a `stream` label (frames, drops,
glass-to-glass per stream and stage); with one stream they are left out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from stream.histogram import Histogram
from stream.report import StageTotals, totals_from_snapshots
from stream.stats import GLASS_MS, OVERLAY_AGE_MS, QUEUE_MS, STAGE_MS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # unless a scraper asks for another
BASE_EDGES_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
STAGE_LABELS = ["pipeline", "stage"]  # every per-stage family (values: `rows` in families)

_Specs = tuple[tuple[str, str, str], ...]  # (stats counter or histogram, metric, help)
COUNTERS: _Specs = (  # stats counter -> (metric, help)
    ("in", "medstream_frames_in_total", "Frames a stage received."),
    ("out", "medstream_frames_out_total", "Frames a stage handed on (render: to its sinks)."),
    ("captured", "medstream_frames_captured_total", "Frames a source stage captured."),
    ("budget_misses", "medstream_budget_misses_total",
     "Frames handed to the sinks after their deadline."),
    ("stage_overruns", "medstream_stage_overruns_total",
     "Frames a stage took longer on than its stage budget."),
    ("shm_inline", "medstream_shm_inline_total",
     "Frames sent inline because every shared-memory slot was in use."),
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
DROPS = ("medstream_drops_total", "Frames dropped, by stage and reason.")
STREAM_DROPS = ("medstream_stream_drops_total", "Frames dropped, by stage, stream and reason.")
HISTOGRAMS = (
    (STAGE_MS, "medstream_stage_seconds", "Time a stage spent on a frame."),
    (QUEUE_MS, "medstream_queue_seconds", "Time a frame waited on the link into a stage."),
    (GLASS_MS, "medstream_glass_to_glass_seconds", "Capture to rendered frame handed to the sinks."),
    (OVERLAY_AGE_MS, "medstream_overlay_age_seconds", "Passthrough render: age of the overlay drawn."),
)
STREAM_HISTOGRAMS = (
    (GLASS_MS, "medstream_stream_glass_to_glass_seconds",
     "Capture to rendered frame handed to the sinks, per stream."),
)


def bucket_edges(budget_ms: float) -> list[float]:
    """Histogram bucket upper edges in seconds: fixed ones plus the budget (and half of it)."""
    edges = set(BASE_EDGES_S)
    if budget_ms > 0:
        edges.update({round(budget_ms / 1000.0, 6), round(budget_ms / 2000.0, 6)})
    return sorted(edges)


def _buckets(h: Histogram, edges: Iterable[float]) -> list[tuple[str, int]]:
    """Cumulative (le, count) pairs of `h` in seconds, ending with +Inf."""
    return [(floatToGoString(e), h.count_at_most(e * 1000.0)) for e in edges] + [("+Inf", h.count)]


def families(msg: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one stats-channel message (see `stream.stats_relay`)."""
    pipeline = str(msg.get("pipeline", ""))
    totals = totals_from_snapshots(msg["snapshots"])
    budget_ms = float(msg.get("budget_ms") or 0.0)
    edges = bucket_edges(budget_ms)
    budget = GaugeMetricFamily(
        "medstream_budget_seconds", "The pipeline's per-frame latency budget.", labels=["pipeline"]
    )
    budget.add_metric([pipeline], budget_ms / 1000.0)
    yield budget
    rows = [([pipeline, sid], t) for sid, t in totals.items()]  # (STAGE_LABELS values, totals)
    yield from _families(rows, STAGE_LABELS, COUNTERS, DROPS, HISTOGRAMS, edges, fps=True)
    yield from _stream_families(pipeline, totals, edges)


class StatsCollector(Collector):
    """A `prometheus_client` collector of the newest stats-channel message (`msg`)."""

    def __init__(self, msg: dict[str, Any] | None = None):
        self.msg = msg  # replaced whole by the reader: a scrape sees one message or the next

    def collect(self) -> Iterator[Metric]:
        msg = self.msg
        return families(msg) if msg is not None else iter(())


def exposition(msg: dict[str, Any]) -> str:
    """The text exposition (format 0.0.4) of one stats-channel message."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(msg))
    return generate_latest(registry).decode()


def _only_metrics(app: Callable[..., Any]) -> Callable[..., Any]:
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"only /metrics is served\n"]
        return app(environ, start_response)

    return serve


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _stream_families(pipeline: str, totals: dict[str, StageTotals], edges: list[float]) -> Iterator[Metric]:
    """`medstream_stream_*`: frames, drops and glass-to-glass per stream (several streams only)."""
    streams = sorted({x for t in totals.values() for x in t.streams})
    if len(streams) < 2:
        return
    labels = [*STAGE_LABELS, "stream"]
    rows = [([pipeline, sid, x], t.streams[x]) for sid, t in totals.items() for x in streams if x in t.streams]
    yield from _families(rows, labels, STREAM_COUNTERS, STREAM_DROPS, STREAM_HISTOGRAMS, edges)


def _families(
    rows: list[tuple[list[str], StageTotals]], labels: list[str], counters: _Specs,
    drops: tuple[str, str], histograms: _Specs, edges: list[float], fps: bool = False,
) -> Iterator[Metric]:
    """The counters and histograms some row has, the drops by reason and (`fps`) the rate of
    `rows`: (label values, the figures of a stage or of one stream at a stage)."""
    for key, name, help_text in counters:
        counter = CounterMetricFamily(name, help_text, labels=labels)
        for values, t in rows:
            if key in t.counters:
                counter.add_metric(values, t.counters[key])
        if counter.samples:
            yield counter
    dropped = CounterMetricFamily(*drops, labels=[*labels, "reason"])
    for values, t in rows:
        for reason, n in sorted(t.drops.items()):
            dropped.add_metric([*values, reason], n)
    yield dropped
    if fps:
        rate = GaugeMetricFamily("medstream_fps", "Frames a stage hands on per second, over its run.",
                                 labels=labels)
        for values, t in rows:
            rate.add_metric(values, t.fps())
        yield rate
    for key, name, help_text in histograms:
        hist = HistogramMetricFamily(name, help_text, labels=labels)
        for values, t in rows:
            if key in t.hists:
                h = t.hists[key]
                hist.add_metric(values, _buckets(h, edges), h.total_ms / 1000.0)
        if hist.samples:
            yield hist


class MetricsServer:
    """Serves the newest message's metrics at /metrics from a background thread."""

    def __init__(self, host: str, port: int):
        self.collector = StatsCollector()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        app = _only_metrics(make_wsgi_app(registry))
        self.httpd = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="prometheus", daemon=True)
        self.thread.start()

    def update(self, msg: dict[str, Any]) -> None:
        self.collector.msg = msg

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=2.0)
