"""The render stage run in-process on an injected clock: what it counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import zmq

from stream.codec import EndOfStream
from stream.config import PipelineConfig, load_config
from stream.frame import Frame
from stream.report import build_report, format_report
from stream.stages.base import StageRuntime
from stream.stages.render import run_render
from stream.stats import StageStats
from stream.transport import Sender

from .helpers import free_port


class SteppingClock:
    """Wall time at start, then `step_ms` more at every reading: each stage step 'takes' time."""

    def __init__(self, step_ms: float) -> None:
        self.t_ns = time.time_ns()
        self.step_ns = int(step_ms * 1e6)
        self.lock = threading.Lock()

    def now_ns(self) -> int:
        with self.lock:
            self.t_ns += self.step_ns
            return self.t_ns

    def sleep_until_ns(self, t_ns: int) -> None:
        with self.lock:
            self.t_ns = max(self.t_ns, t_ns)


def render_config(stage: dict[str, Any]) -> PipelineConfig:
    return load_config(
        {
            "name": "r",
            "budget_ms": 60_000,
            "frame_log": "",
            "links": {
                "in": {
                    "endpoint": f"tcp://127.0.0.1:{free_port()}",
                    "pattern": "pushpull",
                    "mode": "lossless",
                }
            },
            "stages": [{"id": "render", "kind": "render", "input": "in", **stage}],
        }
    )


def frames(n: int, image: np.ndarray | None = None, **extra: Any) -> list[Frame]:
    now = time.time_ns()
    img = np.full((48, 64), 90, np.uint8) if image is None else image
    fmt = "gray8" if img.ndim == 2 else "rgb8"
    return [Frame("s", i, now, now + 10**13, img, fmt, epoch=1, **extra) for i in range(n)]


@contextmanager
def render_stage(cfg: PipelineConfig, clock: Any) -> Iterator[tuple[StageRuntime, Sender]]:
    """Run `run_render` in a thread; the test sends frames and an end of stream on `in`."""
    spec = cfg.stage("render")
    rt = StageRuntime(cfg, spec, clock=clock, stats_endpoint="")
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_render(rt, spec)))  # type: ignore[arg-type]
    ctx = zmq.Context()
    tx = Sender(ctx, "in", cfg.link("in"), "test", clock, StageStats("t", "t", clock))
    thread.start()
    try:
        yield rt, tx
    finally:
        thread.join(20)
        rt.stop_requested = True
        thread.join(5)
        tx.close()
        rt.close()
        ctx.term()
    assert not thread.is_alive() and result == [0], result


def send_all(tx: Sender, batch: list[Frame]) -> None:
    for f in batch:
        assert tx.send(f)
    tx.send_eos(EndOfStream("s", 1, len(batch) - 1), repeats=3)


@pytest.mark.parametrize(("stage_budget_ms", "overruns"), [(20.0, 6), (1000.0, 0)])
def test_render_stage_budget_overruns_are_counted(stage_budget_ms: float, overruns: int) -> None:
    cfg = render_config({"stage_budget_ms": stage_budget_ms, "hud": False})
    with render_stage(cfg, SteppingClock(step_ms=10.0)) as (rt, tx):  # >= 3 readings a frame
        send_all(tx, frames(6))
    assert rt.stats.counters["out"] == 6
    assert rt.stats.counters["stage_overruns"] == overruns
    snapshot = rt.stats.snapshot()
    report = build_report(cfg, [snapshot], 1.0, {}, "test")
    assert report["budget"]["stage_overruns"] == ({"render": 6} if overruns else {})
    assert ("stage budget overruns: render 6" in format_report(report)) == bool(overruns)
