"""Accounting under faults, clocks that disagree, and stats snapshots that are not to be trusted."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.clock import FakeClock
from stream.config import load_config
from stream.report import build_report, captured_frames, format_report
from stream.sinks.writer_thread import WriterThread
from stream.snapshot import parse_snapshot
from stream.stats import QUEUE_MS

from .helpers import OpenLink, make_frame

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(yaml.safe_load((ROOT / "configs" / "ultrasound_seg.yaml").read_text()))
IDS = {s.id for s in CFG.stages}


def snap(stage: str, pid: int, counters: dict, info: dict | None = None, drops: dict | None = None) -> dict:
    return {
        "stage": stage, "pid": pid, "started_ns": pid, "final": False, "counters": counters,
        "drops": drops or {}, "hists": {}, "info": info or {}, "first_out_ns": None,
        "last_out_ns": None,
    }


def test_a_killed_source_is_counted_up_to_the_highest_sequence_seen() -> None:
    snapshots = [
        # the first grab run was SIGKILLed: its last snapshot says 10, downstream saw seq 14
        snap("grab", 1, {"captured": 10}, {"stream": "grab", "epoch": 111}),
        snap("grab", 2, {"captured": 20}, {"stream": "grab", "epoch": 222}),  # its restart
        snap("infer", 3, {"out": 28}, {"seq_high": {"grab@111": 14, "grab@222": 19}}),
        snap("render", 4, {"out": 27}, {"seq_high": {"grab@111": 13, "grab@222": 19}},
             drops={"late": 1}),
    ]
    assert captured_frames(CFG, snapshots) == (35, 5)
    report = build_report(CFG, snapshots, 1.0, {"grab": 1}, "test")
    f = report["frames"]
    assert f["captured"] == 35 and f["captured_unreported"] == 5
    assert f["delivered"] == 27 and f["dropped"] == {"late": 1, "lost": 7}
    assert f["accounted"]


def test_frames_still_queued_in_a_killed_render_stages_file_sink_are_lost_not_delivered() -> None:
    """A render stage SIGKILLed with 2 frames in its recorder's queue: its last snapshot says
    out 30, sink_pending 2; those 2 never reached the file, so they are lost, not delivered."""
    snapshots = [
        snap("grab", 1, {"captured": 60, "out": 60}, {"stream": "grab", "epoch": 1}),
        snap("infer", 2, {"out": 60}),
        snap("render", 3, {"out": 30, "sink_pending": 2}),  # killed
        snap("render", 4, {"out": 28, "sink_pending": 0}),  # its restart, stopped cleanly
    ]
    f = build_report(CFG, snapshots, 1.0, {"render": 1}, "test")["frames"]
    assert f["delivered"] == 56 and f["dropped"] == {"lost": 4} and f["accounted"]


def test_writer_thread_counts_what_is_not_on_disk_yet() -> None:
    release = threading.Event()
    writer = WriterThread("t", 8, lambda item: release.wait(5))
    for i in range(3):
        assert writer.put(i)
    assert writer.pending() == 3  # one being written, two queued
    release.set()
    assert writer.stop() and writer.pending() == 0


def test_clock_skew_is_counted_not_recorded(link: OpenLink) -> None:
    """A receiver whose clock is 1 s behind the sender's sees frames 'from the future'."""
    behind = FakeClock(time.time_ns() - 1_000_000_000)
    ends = link("pushpull", "lossless", transport="tcp", rx_clock=behind)
    for seq in range(3):
        assert ends.tx.send(make_frame(seq, (4, 4), time.time_ns()))
        assert ends.rx.recv(2000) is not None
    assert ends.rx_stats.counters["clock_skew"] == 3
    assert QUEUE_MS not in ends.rx_stats.hists
    snapshots = [snap("grab", 1, {"captured": 3, "out": 3}), snap("render", 2, {"out": 3, "clock_skew": 3})]
    report = build_report(CFG, snapshots, 1.0, {}, "test")
    assert report["clock"]["skew_events"] == {"render": 3}
    assert "CLOCKS DISAGREE" in format_report(report)


def test_sink_drops_in_the_report() -> None:
    snapshots = [
        snap("grab", 1, {"captured": 5}),
        snap("render", 2, {"out": 5}, {"sink_drops": {"recorder": {"sink_overflow": 2}}}),
    ]
    report = build_report(CFG, snapshots, 1.0, {}, "test")
    assert report["frames"]["sink_drops"] == {"render/recorder": 2}
    assert report["frames"]["sink_drop_reasons"] == {"render/recorder": {"sink_overflow": 2}}
    assert (
        "sinks dropped frames they were handed: render/recorder (writer queue full) 2"
        in format_report(report)
    )


def test_sink_drops_name_the_sink_type_and_each_reason() -> None:
    drops = {"igtl": {"no_client": 567}, "igtl#2": {"no_client": 3, "client_skipped": 4}}
    snapshots = [
        snap("grab", 1, {"captured": 600}),
        snap("render", 2, {"out": 600}, {"sink_drops": drops}),
    ]
    text = format_report(build_report(CFG, snapshots, 1.0, {}, "test"))
    assert "render/igtl (no client connected) 567" in text
    assert "render/igtl#2 (a slow client skipped it 4, no client connected 3) 7" in text


def test_security_summary_in_the_report() -> None:
    snapshots = [snap("grab", 1, {"captured": 1, "auth_refused:medstream/frames": 4})]
    report = build_report(CFG, snapshots, 1.0, {}, "test")
    assert report["security"]["auth_refused"] == {"grab/medstream/frames": 4}
    assert report["security"]["curve"] is False and report["security"]["insecure_endpoints"] == []
    assert "refused peers: grab/medstream/frames 4" in format_report(report)


GOOD = snap("infer", 7, {"in": 3}, {"seq_high": {"grab@1": 2}})


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "intruder"}, {"stage": ["infer"]}, {"pid": "7"}, {"pid": True}, {"final": 1},
        {"counters": {"in": -1}}, {"counters": []}, {"drops": {"x": 1.5}},
        {"hists": {"h": {"buckets": {"99999999": 1}, "count": 1}}}, {"hists": {"h": []}},
        {"hists": {"h": {"buckets": {"3": 2**70}, "count": 1}}},
        {"info": {"confusion": [[1, 2]]}}, {"info": {"confusion": "x"}}, {"info": []},
        {"info": {"seq_high": {"a": -5}}}, {"info": {"labels": [1]}}, {"first_out_ns": "x"},
        {"info": {"sink_drops": {"RecorderSink": {"x": "1"}}}}, {"info": {"sink_drops": []}},
    ],
)
def test_malformed_snapshots_are_refused(change: dict) -> None:
    bad = copy.deepcopy(GOOD)
    bad.update(change)
    with pytest.raises(ValueError):
        parse_snapshot(json.dumps(bad).encode(), IDS)


def test_snapshot_garbage() -> None:
    assert parse_snapshot(json.dumps(GOOD).encode(), IDS)["stage"] == "infer"
    for body in (b"", b"\xff", b"[" * 100_000, b"null", b"1e999999", b"{" + b"x" * 100):
        with pytest.raises(ValueError):
            parse_snapshot(body, IDS)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)


@pytest.mark.slow  # long: thousands of generated cases
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(GOOD)), JSON, max_size=4))
def test_hypothesis_snapshots_never_crash(changes: dict) -> None:
    body = copy.deepcopy(GOOD)
    body.update(changes)
    try:
        checked = parse_snapshot(json.dumps(body).encode(), IDS)
    except ValueError:
        return
    format_report(build_report(CFG, [checked], 1.0, {}, "test"))  # what passes, reports


def test_render_names_sinks_by_their_config_type() -> None:
    from stream.sinks import IgtlSink, RecorderSink
    from stream.sinks.naming import sink_kind, unique_label

    igtl = IgtlSink.__new__(IgtlSink)  # the type is all that names it
    assert sink_kind(igtl) == "igtl"
    assert sink_kind(RecorderSink.__new__(RecorderSink)) == "recorder"
    assert sink_kind(object()) == "object"
    named: dict[str, object] = {}
    for _ in range(3):
        named[unique_label(sink_kind(igtl), named)] = {}
    assert list(named) == ["igtl", "igtl#2", "igtl#3"]


def test_a_grab_whose_stats_never_arrive_is_accounted_from_what_infer_saw() -> None:
    """No snapshot from grab at all: infer's arrivals (received + lost on the link) stand in
    for its captured count; a second stream the config does not know is counted the same way."""
    snapshots = [
        snap("infer", 3, {"in": 43, "out": 41}, {"arrived": {"grab@5": [42, 0, 41], "x@1": [3, 7, 9]}},
             drops={"overflow": 2, "late": 2}),
        snap("render", 4, {"out": 40}, drops={"late": 1}),
    ]
    f = build_report(CFG, snapshots, 1.0, {}, "test")["frames"]
    assert f["captured"] == 45 and f["delivered"] == 40
    assert f["dropped"] == {"late": 3, "overflow": 2} and f["accounted"]
    assert f["producers_without_stats"]["x@1"] == {"frames": 3, "seq": [7, 9], "counted_by": "infer"}
    text = format_report(build_report(CFG, snapshots, 1.0, {}, "test"))
    assert "NOT ACCOUNTED" not in text and "grab@5 42 (seq 0-41, at infer)" in text


def test_arrivals_of_a_reporting_grab_are_not_counted_twice() -> None:
    snapshots = [
        snap("grab", 1, {"captured": 10, "out": 10}, {"stream": "grab", "epoch": 5}),
        snap("infer", 3, {"out": 10}, {"arrived": {"grab@5": [10, 0, 9]}}),
        snap("render", 4, {"out": 10}),
    ]
    f = build_report(CFG, snapshots, 1.0, {}, "test")["frames"]
    assert f["captured"] == 10 and f["producers_without_stats"] == {} and f["accounted"]
