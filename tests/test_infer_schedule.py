"""Temporal skipping and the fallback cascade, with an injected clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines import InferenceResult
from stream.clock import FakeClock
from stream.codec import EndOfStream
from stream.frame import Frame
from stream.stages.base import StageRuntime
from stream.stages.infer_schedule import FALLBACK, MAIN, InferSchedule

from .helpers import infer_stage_config, ipc_endpoint, running_infer_stage, wait_until

MS = 1_000_000


def test_every_nth_frame_runs_the_rest_reuse() -> None:
    s = InferSchedule(run_every=3, max_reuse_age_ms=500)
    actions = []
    for i in range(7):
        d = s.decide(i * 33 * MS, predicted_miss=False)
        actions.append(d.action)
        if d.action == "run":
            s.record(d.model, i, i * 33 * MS, "m", missed=False)
    assert actions == ["run", "reuse", "reuse", "run", "reuse", "reuse", "run"]
    assert s.decide(10 * 33 * MS, False).reason == "every_n"


def test_reuse_only_while_young_enough() -> None:
    s = InferSchedule(run_every=10, max_reuse_age_ms=50)
    s.record(MAIN, 0, 0, "m", missed=False)
    s.frames = 1
    assert s.decide(40 * MS, False).action == "reuse"
    assert s.decide(60 * MS, False).action == "run"  # too old: run instead


def test_auto_skip_reuses_instead_of_dropping() -> None:
    s = InferSchedule(auto_skip=True, max_reuse_age_ms=100)
    assert s.decide(0, predicted_miss=True).action == "drop"  # nothing to reuse yet
    s.record(MAIN, 1, 10 * MS, "m", missed=False)
    d = s.decide(40 * MS, predicted_miss=True)
    assert (d.action, d.reason) == ("reuse", "budget")
    assert InferSchedule().decide(40 * MS, predicted_miss=True).action == "drop"  # off by default


def test_cascade_switches_after_misses_and_back_after_a_good_probe() -> None:
    s = InferSchedule(cascade=True, fallback_after=3, probe_every=4)
    for i in range(2):
        assert s.decide(i, False).model == MAIN
        assert s.record(MAIN, i, i, "big", missed=True) is None
    assert s.decide(2, False).model == MAIN
    assert s.record(MAIN, 2, 2, "big", missed=True) == "to_fallback"
    models = []
    for i in range(3, 11):
        d = s.decide(i, False)
        models.append((d.model, d.reason))
        missed = d.model == MAIN  # the main model is still too slow at the first probe
        s.record(d.model, i, i, "x", missed=missed and i < 8)
    assert models[:4] == [(FALLBACK, ""), (FALLBACK, ""), (FALLBACK, ""), (MAIN, "probe")]
    assert s.active == MAIN  # the second probe (frame 10) met the budget
    assert models[7] == (MAIN, "probe")


def test_predicted_misses_count_towards_the_cascade() -> None:
    s = InferSchedule(cascade=True, fallback_after=2)
    assert s.decide(0, predicted_miss=True).action == "drop"
    d = s.decide(1, predicted_miss=True)
    assert (d.action, d.model, d.switch) == ("run", FALLBACK, "to_fallback")


class ClockedModel:
    """A fake model that takes `ms` of the fake clock per frame; `ms` can change mid-run."""

    labels, backend, device, precision, task, selection = (
        ["bg", "fg"],
        "fake",
        "cpu",
        "fp32",
        "segmentation",
        "test",
    )

    def __init__(self, clock: FakeClock, ms: float, model_id: str, value: int) -> None:
        self.clock, self.ms, self.model_id, self.value, self.calls = clock, ms, model_id, value, 0

    def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
        self.calls += 1
        self.clock.advance_ms(self.ms)
        return InferenceResult(mask=np.full(image.shape, self.value, np.uint8))

    def close(self) -> None:
        pass


def _run_stage(
    cfg, clock, main, fallback, frames: list[tuple[int, int]]
) -> tuple[list[Frame], StageRuntime]:  # type: ignore[no-untyped-def]
    """Send frames (capture offset ms from now, deadline offset ms) one at a time; return outputs."""
    outs: list[Frame] = []
    with running_infer_stage(cfg, clock, main, fallback) as stage:
        for seq, (capture_ms, deadline_ms) in enumerate(frames):
            t = clock.now_ns()
            image = np.zeros((4, 4), np.uint8)
            frame = Frame(
                "s", seq, t + capture_ms * MS, t + deadline_ms * MS, image, "gray8", epoch=1
            )
            stage.send_and_wait(frame)
        while (msg := stage.rx.recv(200)) is not None:
            outs.append(msg.frame)
        stage.tx.send_eos(EndOfStream("s", 1, len(frames) - 1))
    return outs, stage.rt


def test_stage_reuses_every_nth_with_age_in_meta(ipc_dir: Path) -> None:
    clock = FakeClock()
    main = ClockedModel(clock, 5.0, "big", 1)
    cfg = infer_stage_config(ipc_dir, {"run_every": 2, "max_reuse_age_ms": 500})
    outs, rt = _run_stage(cfg, clock, main, None, [(0, 50)] * 4)
    assert main.calls == 2 and len(outs) == 4
    infos = [f.meta["inference"] for f in outs]
    assert [i["reused"] for i in infos] == [False, True, False, True]
    assert infos[1]["result_seq"] == 0 and infos[1]["reason"] == "every_n"
    assert infos[1]["age_ms"] == 5.0  # frame 1 was captured 5 ms (one model run) after frame 0
    np.testing.assert_array_equal(outs[1].parts["mask"], np.ones((4, 4), np.uint8))
    assert outs[1].annotations.model == "big"
    assert rt.stats.counters["reused_every_n"] == 2


def test_stage_cascade_switches_logs_and_counts(ipc_dir: Path) -> None:
    clock = FakeClock()
    main = ClockedModel(clock, 40.0, "big", 1)  # over the 20 ms stage budget
    light = ClockedModel(clock, 5.0, "small", 2)
    cfg = infer_stage_config(
        ipc_dir,
        {
            "stage_budget_ms": 20,
            "predict_drops": False,
            "fallback": {"model": "classical-median"},  # replaced by `light` in this test
            "fallback_after": 2,
            "probe_every": 3,
        }
    )
    frames = [(0, 200)] * 8
    outs, rt = _run_stage(cfg, clock, main, light, frames[:5])
    # frames 0, 1 on the main model (both over budget) -> switch; 2, 3 on the fallback; 4 probes main
    assert [f.annotations.model for f in outs] == ["big", "big", "small", "small", "big"]
    assert rt.stats.counters["cascade_to_fallback"] == 1
    assert rt.stats.counters["fallback_frames"] == 2 and rt.stats.counters["cascade_probes"] == 1
    assert rt.stats.info["active_model"] == "small"  # the probe missed too: still on the fallback

    clock2 = FakeClock()
    light2 = ClockedModel(clock2, 5.0, "small", 2)

    class Recovering(ClockedModel):
        def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
            if self.calls >= 2:
                self.ms = 10.0  # the load went away
            return super().__call__(image, pixel_format)

    main2 = Recovering(clock2, 40.0, "big", 1)
    outs, rt = _run_stage(cfg, clock2, main2, light2, frames[:6])
    assert [f.annotations.model for f in outs] == ["big", "big", "small", "small", "big", "big"]
    assert rt.stats.counters["cascade_switches"] == 2
    assert rt.stats.counters["cascade_to_main"] == 1 and rt.stats.info["active_model"] == "big"


def test_probe_cadence_counts_reused_and_dropped_frames() -> None:
    """On the fallback, frames reused or dropped still bring the next probe closer."""
    s = InferSchedule(cascade=True, fallback_after=1, probe_every=3, auto_skip=True)
    assert s.decide(0, predicted_miss=True).switch == "to_fallback"
    s.record(FALLBACK, 0, 0, "small", missed=False)
    assert s.decide(1, predicted_miss=True).action == "reuse"
    assert s.decide(2, predicted_miss=True).action == "reuse"
    d = s.decide(3, predicted_miss=True)
    assert (d.action, d.model, d.reason) == ("run", MAIN, "probe")


def test_no_consumer_warning_not_logged_while_stopping(ipc_dir: Path) -> None:
    """A stage stopped while it waits for its consumer does not claim the wait timed out."""
    import logging
    import threading

    from stream.config import load_config
    from stream.stages.infer import run_infer

    cfg = load_config(
        {
            "name": "t",
            "budget_ms": 50,
            "links": {
                "in": {"endpoint": ipc_endpoint(ipc_dir, "in"), "pattern": "pushpull", "shm": "off"},
                "out": {"endpoint": ipc_endpoint(ipc_dir, "out"), "pattern": "pubsub", "shm": "off"},
            },
            "stages": [
                {"id": "infer", "kind": "infer", "input": "in", "output": "out",
                 "wait_for_consumers": 1, "wait_timeout_s": 20},
            ],
        }
    )
    clock = FakeClock()
    rt = StageRuntime(cfg, cfg.stage("infer"), clock=clock, stats_endpoint="")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    rt.log.addHandler(handler)
    model = ClockedModel(clock, 1.0, "m", 1)
    stage = threading.Thread(target=run_infer, args=(rt, cfg.stage("infer"), model, None))
    try:
        stage.start()
        # bound its output: now (or at once) waiting for a subscriber that never comes
        assert wait_until(lambda: (ipc_dir / "out.sock").exists(), 10)
        rt.stop_requested = True
        stage.join(10)
        assert not stage.is_alive()
    finally:
        rt.log.removeHandler(handler)
        rt.close()
    assert not [ln for ln in lines if "no consumer" in ln], lines
