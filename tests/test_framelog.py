"""The frame log: silent (nothing encoded) until a profiler subscribes, then one record per event."""

from __future__ import annotations

import json
import time
from pathlib import Path

import zmq

from stream.framelog import FrameLog

from .helpers import ipc_endpoint, make_frame


def test_records_only_while_a_profiler_listens(ipc_dir: Path) -> None:
    ctx = zmq.Context()
    endpoint = ipc_endpoint(ipc_dir, "framelog")  # nobody there until the test binds it
    log = FrameLog(ctx, endpoint, "infer")
    frame = make_frame(7, (8, 8), 1_000)
    frame.with_span("grab", 900, 1_000)
    sub = ctx.socket(zmq.SUB)
    try:
        log.out(frame, 1_100, 1_200)  # nobody bound there yet: returns at once
        assert not log.active()
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.bind(endpoint)
        end = time.monotonic() + 10
        while not log.active() and time.monotonic() < end:
            sub.poll(10)  # a bound SUB attaches a new peer (and subscribes it) when it is used
        assert log.active()
        log.out(frame, 1_100, 1_200, handoff_ns=1_250)
        log.drop(frame, "late", 1_300, 1_300)
        assert sub.poll(5000)
        out = json.loads(sub.recv())
        drop = json.loads(sub.recv())
        assert out["event"] == "out" and out["stage"] == "infer" and out["seq"] == 7
        assert (out["start_ns"], out["end_ns"], out["handoff_ns"]) == (1_100, 1_200, 1_250)
        assert out["trace"] == [["grab", 900, 1_000]] and out["budget_miss"] is False
        assert drop["event"] == "drop" and drop["reason"] == "late"
    finally:
        sub.close(linger=0)
        log.close()
        ctx.term()


def test_empty_endpoint_is_a_no_op() -> None:
    ctx = zmq.Context()
    log = FrameLog(ctx, "", "grab")
    log.out(make_frame(1, (4, 4), 1), 1, 2)
    assert not log.active()
    log.close()
    ctx.term()
