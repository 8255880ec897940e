"""The frame log: silent (nothing encoded) until a profiler subscribes, then one record per event."""

from __future__ import annotations

import json
from pathlib import Path

import zmq

from stream.framelog import FrameLog

from .helpers import ipc_endpoint, make_frame, wait_until


def test_records_only_while_a_profiler_listens(zmq_ctx: zmq.Context, ipc_dir: Path) -> None:
    endpoint = ipc_endpoint(ipc_dir, "framelog")  # nobody there until the test binds it
    log = FrameLog(zmq_ctx, endpoint, "infer")
    frame = make_frame(7, (8, 8), 1_000)
    frame.with_span("grab", 900, 1_000)
    log.out(frame, 1_100, 1_200)  # nobody bound there yet: returns at once
    assert not log.active()
    sub = zmq_ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(endpoint)
    # a bound SUB attaches a new peer (and subscribes it) when it is used: poll it meanwhile
    assert wait_until(lambda: sub.poll(10) >= 0 and log.active(), 10)
    log.out(frame, 1_100, 1_200, handoff_ns=1_250)
    log.drop(frame, "late", 1_300, 1_300)
    assert sub.poll(5000)
    out = json.loads(sub.recv())
    drop = json.loads(sub.recv())
    assert out["event"] == "out" and out["stage"] == "infer" and out["seq"] == 7
    assert (out["start_ns"], out["end_ns"], out["handoff_ns"]) == (1_100, 1_200, 1_250)
    assert out["trace"] == [["grab", 900, 1_000]] and out["budget_miss"] is False
    assert drop["event"] == "drop" and drop["reason"] == "late"


def test_empty_endpoint_is_a_no_op(zmq_ctx: zmq.Context) -> None:
    log = FrameLog(zmq_ctx, "", "grab")
    log.out(make_frame(1, (4, 4), 1), 1, 2)
    assert not log.active()
