"""The profiler's figures on known records: exact percentiles, warm-up, fates, time breakdown."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from stream.stats_relay import TOPIC, VERSION
from tools.profiling.analysis import LOST_IN_LINK, compare_with_report, components, summarize
from tools.profiling.cli import refusals_line
from tools.profiling.records import FrameTable
from tools.profiling.tap import ProfileTap

from .profile_data import MS, STAGES, record, synthetic_table


def test_summary_matches_numpy_on_the_records() -> None:
    table, truth = synthetic_table()
    table.mark_warmup(10)
    s = summarize(table, STAGES, budget_ms=50.0)
    kept = {k: v for k, v in truth["glass"].items() if k >= 10}
    g = np.array(list(kept.values()))
    e2e = s["end_to_end"]
    assert e2e["delivered"] == len(kept) and e2e["captured"] == 190
    for p, key in ((50, "p50"), (95, "p95"), (99, "p99"), (99.9, "p99_9")):
        assert e2e[key] == pytest.approx(np.percentile(g, p, method="inverted_cdf"), abs=1e-3)
    assert e2e["max"] == pytest.approx(g.max(), abs=1e-3)
    assert e2e["tail"] == pytest.approx(
        g.max() - np.percentile(g, 95, method="inverted_cdf"), abs=2e-3
    )
    assert e2e["budget_misses"] == 1 and e2e["verdict"] == "PASS"  # one miss is below p99
    late = len([k for k in truth["dropped"] if k >= 10])
    lost = len([k for k in truth["lost"] if k >= 10])
    assert (late, lost) == (8, 4)
    assert e2e["drops"] == {"late": late, LOST_IN_LINK: lost}
    assert e2e["fps"] == pytest.approx((len(kept) - 1) / (189 * 0.033), rel=0.02)  # delivered
    infer = s["stages"]["infer"]
    want = np.array([v for k, v in truth["infer"].items() if k >= 10])
    assert infer["count"] == len(want)
    assert infer["p50"] == pytest.approx(np.percentile(want, 50, method="inverted_cdf"), abs=1e-3)
    assert infer["drops"] == {
        "late": late,
        LOST_IN_LINK: lost,
    }  # the lost frames never reached infer
    assert infer["budget_misses"] == int((want > 8.0).sum())
    assert s["frames"] == {"recorded": 200, "warmup_excluded": 10, "analysed": 190}


def test_breakdown_adds_up_and_is_never_negative() -> None:
    table, truth = synthetic_table(60)
    for f in table.ordered():
        parts = components(f)
        if f.delivered:
            assert sum(ms for _, ms in parts) == pytest.approx(truth["glass"][f.seq], abs=1e-6)
            assert [n for n, _ in parts] == [
                "grab",
                "grab->infer",
                "infer",
                "infer->render",
                "render",
            ]
            assert min(ms for _, ms in parts) >= 0
        else:
            assert parts == []
    # a sender descheduled after its send ends its span after the receiver started: clamped
    t = FrameTable()
    cap = 10**18
    t.add(record("grab", "out", 0, cap, cap - MS, cap + 5 * MS))
    t.add(record("render", "out", 0, cap, cap + MS, cap + 4 * MS, handoff_ns=cap + 3 * MS))
    f = t.ordered()[0]
    f.delivered_trace = [("grab", cap - MS, cap)]
    assert components(f) == [("grab", 1.0), ("grab->render", 0.0), ("render", 2.0)]


def test_bad_records_are_counted_not_raised() -> None:
    t = FrameTable()
    t.add_json(b"not json")
    t.add_json(b"[1]")
    t.add_json(b'{"v": 1, "event": "out", "stage": "x"}')
    t.add_json(b'{"v": 2}')
    assert t.invalid == 4 and not t.frames


def test_compare_with_report_flags_differences() -> None:
    table, _ = synthetic_table(100)
    s = summarize(table, STAGES, 50.0)
    e2e = s["end_to_end"]
    report = {
        "frames": {"delivered": e2e["delivered"], "dropped_total": sum(e2e["drops"].values())},
        "latency_ms": {
            "glass_to_glass": {k: e2e[k] * 1.003 for k in ("p50", "p90", "p99", "max")},
            "stages": {
                "infer": {
                    **{k: s["stages"]["infer"][k] for k in ("p50", "p90", "p99", "max")},
                    "count": 1,
                }
            },
        },
        "budget": {"misses": e2e["budget_misses"]},
    }
    a = compare_with_report(s, report)
    bad = {c["what"] for c in a["checks"] if not c["ok"]}
    assert bad == {"stage infer count"}  # 0.3% is inside the histogram's 0.5% error


def test_malformed_stats_messages_are_counted_and_said() -> None:
    """The tap refuses a stats message that is not one by counting it, and the profile says
    so at the end: a refusal is never silent."""
    ctx = zmq.Context()
    tap = ProfileTap(ctx, "", "")
    try:
        good = json.dumps({"v": VERSION, "snapshots": [], "stages": []}).encode()
        tap._on_stats([TOPIC, good])
        tap._on_stats([TOPIC, b"{not json"])
        tap._on_stats([b"other.topic", good])
        tap._on_stats([TOPIC, json.dumps({"v": VERSION + 1, "snapshots": [], "stages": []}).encode()])
    finally:
        tap.close()
        ctx.term()
    assert tap.invalid_stats == 3
    assert tap.last_stats is not None and tap.last_stats["v"] == VERSION

    summary = {"frame_log": {"records_invalid": 2}, "profile": {"stats_messages_invalid": 3}}
    assert refusals_line(summary) == (
        "refused as malformed: 2 frame-log records, 3 stats messages (counted in summary.json)"
    )
    clean = {"frame_log": {"records_invalid": 0}, "profile": {"stats_messages_invalid": 0}}
    assert refusals_line(clean) == ""
