"""The Perfetto timeline: valid Chrome Trace JSON, one lane per stage, no overlaps in a lane."""

from __future__ import annotations

import json
from collections import Counter

from tools.profiling.chrome_trace import build_trace, check_trace

from .profile_data import MS, STAGES, record, synthetic_table


def _lanes(trace: dict) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}


def test_trace_is_valid_json_with_lanes_flows_and_markers() -> None:
    table, truth = synthetic_table(120)
    trace = json.loads(json.dumps(build_trace(table, STAGES, "p", 50.0)))
    assert check_trace(trace) == []
    lanes = _lanes(trace)
    assert sorted(lanes.values()) == ["grab", "infer", "render"]
    events = trace["traceEvents"]
    phases = Counter(e["ph"] for e in events)
    delivered = len(truth["glass"])
    assert phases["X"] == 120 + (120 - len(truth["lost"])) + delivered
    assert phases["f"] == 120 - len(truth["lost"])  # one flow per frame seen by 2+ stages
    assert phases["s"] == phases["f"]
    names = Counter(e["name"] for e in events if e["ph"] == "i")
    assert names["budget miss"] == 1
    assert names["drop: late"] == len(truth["dropped"])
    assert names["drop: lost_in_link"] == len(truth["lost"])
    x = [e for e in events if e["ph"] == "X"]
    assert all(e["args"]["seq"] == int(e["name"].split()[1]) for e in x)
    for tid in lanes:  # per lane, sorted by start, each ends before the next begins
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in x if e["tid"] == tid)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_overlapping_work_of_one_stage_gets_a_second_lane() -> None:
    table, _ = synthetic_table(3)
    cap = 10**18 + 33 * MS  # an old incarnation of infer still finishing frame 1 late
    table.add({**record("infer", "out", 1, cap, cap + MS, cap + 80 * MS), "pid": 2})
    trace = build_trace(table, STAGES, "p", 50.0)
    assert check_trace(trace) == []
    assert "infer (2)" in _lanes(trace).values()


def test_check_trace_finds_problems() -> None:
    bad = {
        "traceEvents": [
            {"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
            {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 5, "dur": 10},
            {"ph": "X", "name": "c", "pid": 1, "tid": 2, "ts": 0, "dur": -1},
            {"ph": "s", "name": "f", "pid": 1, "tid": 2, "ts": 0},
            {"ph": "Q"},
        ]
    }
    problems = check_trace(bad)
    assert len(problems) == 4, problems
    assert check_trace([]) == ["not an object with a traceEvents list"]
