"""The grab stage stamps every frame with the rate it is paced at (`meta["source_fps"]`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from stream.clock import WallClock
from stream.config import load_config
from stream.sources.base import Capture
from stream.stages.base import StageRuntime
from stream.stages.grab import run_grab
from stream.stats import StageStats
from stream.transport import Receiver

from .helpers import ipc_endpoint


class Frames:
    """A finite source of `n` small frames; `self_paced` and `fps` as given."""

    def __init__(self, n: int, fps: Any, self_paced: bool) -> None:
        self.n, self.fps, self.self_paced = n, fps, self_paced

    def read(self) -> Capture | None:
        if self.n == 0:
            return None
        self.n -= 1
        return Capture(np.zeros((8, 8), np.uint8), "gray8", meta={"k": 1})

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("stage_fps", "source_fps", "self_paced", "want"),
    [
        (None, 18.44, False, 18.44),  # a file's own rate (a DICOM cine's FrameTime)
        (200.0, 18.44, False, 200.0),  # the stage's fps wins: frames come at that rate
        (None, None, False, 30.0),  # no rate anywhere: paced at the default
        (None, 25.0, True, 25.0),  # a live device that knows its rate
        (None, float("nan"), True, None),  # ... or does not: no rate is claimed
        (None, None, True, None),
    ],
)
def test_frames_carry_the_rate_they_are_paced_at(
    stage_fps: float | None,
    source_fps: Any,
    self_paced: bool,
    want: float | None,
    ipc_dir: Path,
    zmq_ctx: zmq.Context,
) -> None:
    endpoint = ipc_endpoint(ipc_dir, "out")
    cfg = load_config(
        {
            "name": "g",
            "budget_ms": 60_000,
            "frame_log": "",
            "links": {"out": {"endpoint": endpoint, "pattern": "pushpull", "mode": "lossless"}},
            "stages": [
                {"id": "grab", "kind": "grab", "output": "out", "fps": stage_fps, "frames": 3,
                 "source": {"type": "phantom"}}
            ],
        }
    )
    spec = cfg.stage("grab")
    clock = WallClock()
    rt = StageRuntime(cfg, spec, clock=clock, stats_endpoint="")
    rx = Receiver(zmq_ctx, "out", cfg.link("out"), "test", clock, StageStats("t", "t", clock))
    source = Frames(3, source_fps, self_paced)
    thread = threading.Thread(target=run_grab, args=(rt, spec, source))  # type: ignore[arg-type]
    thread.start()
    metas = []
    try:
        while len(metas) < 3:
            msg = rx.recv(5000)
            assert msg is not None, "no frame within 5 s"
            if msg.frame is not None:
                metas.append(msg.frame.meta)
    finally:
        thread.join(10)
        rx.close()
        rt.close()
    for meta in metas:
        assert meta["k"] == 1  # the source's own meta is kept
        assert meta.get("source_fps") == (None if want is None else pytest.approx(want))
