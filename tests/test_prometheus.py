"""Prometheus exposition: counters `_total`, histograms in seconds with the budget as an edge,
no per-frame labels; served over HTTP."""

from __future__ import annotations

import re
import urllib.request

from stream.clock import FakeClock
from stream.sinks.prometheus import CONTENT_TYPE, MetricsServer, exposition
from stream.stats import GLASS_MS, STAGE_MS, StageStats

from .test_top import _message

SAMPLE = re.compile(r'^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf)$')


def _stats() -> list[StageStats]:
    clock = FakeClock()
    grab, render = StageStats("grab", "grab", clock), StageStats("render", "render", clock)
    grab.count("captured", 100)
    for i in range(100):
        grab.frame_out(clock.now_ns())
        clock.advance_ms(33)
        render.count("in")
        render.frame_out(clock.now_ns())
        render.observe(GLASS_MS, 20.0 + (i % 10) * 4)  # 20 .. 56 ms
        render.observe(STAGE_MS, 2.0)
    render.drop("late", 3)
    render.drop('odd"reason', 1)
    render.count("budget_misses", 10)
    return [grab, render]


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = sorted(re.findall(r'[a-z_]+="(?:[^"\\]|\\.)*"', m.group(2) or ""))  # any order
        key = m.group(1) + ("{" + ",".join(labels) + "}" if labels else "")
        out[key] = float(m.group(3).replace("+Inf", "inf"))
    return out


def test_exposition_is_well_formed() -> None:
    text = exposition(_message(_stats(), 3.3))
    s = _samples(text)
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    assert s['medstream_frames_captured_total{pipeline="p",stage="grab"}'] == 100
    assert s['medstream_drops_total{pipeline="p",reason="late",stage="render"}'] == 3
    assert 'reason="odd\\"reason"' in text
    assert s['medstream_budget_misses_total{pipeline="p",stage="render"}'] == 10
    g = {k: v for k, v in s.items() if k.startswith("medstream_glass_to_glass_seconds_bucket")}
    edges = [(float(re.search(r'le="([^"]+)"', k).group(1)), v) for k, v in g.items()]
    assert (0.05, 80.0) in edges  # the budget is a bucket edge: 20..48 ms are within it
    counts = [v for _, v in sorted(edges)]
    assert counts == sorted(counts) and counts[-1] == 100  # cumulative, +Inf = count
    assert s['medstream_glass_to_glass_seconds_count{pipeline="p",stage="render"}'] == 100
    assert abs(s['medstream_glass_to_glass_seconds_sum{pipeline="p",stage="render"}'] - 3.8) < 1e-6
    labels = set(re.findall(r'([a-z_]+)="', text))
    assert labels <= {"pipeline", "stage", "reason", "le"}  # nothing per frame


def test_served_over_http() -> None:
    server = MetricsServer("127.0.0.1", 0)
    try:
        server.update(_message(_stats(), 1.0))
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE
            assert b"medstream_frames_out_total" in r.read()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        server.close()
