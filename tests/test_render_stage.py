"""The render stage run in-process on an injected clock: what it counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
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

from .helpers import ipc_endpoint


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


def render_config(stage: dict[str, Any], endpoint: str = "ipc://unused.sock") -> PipelineConfig:
    """A render stage with this config, reading frames from a lossless link at `endpoint`."""
    return load_config(
        {
            "name": "r",
            "budget_ms": 60_000,
            "frame_log": "",
            "links": {
                "in": {
                    "endpoint": endpoint,
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


@pytest.mark.parametrize(("stage_budget_ms", "overruns"), [(15.0, 6), (1000.0, 0)])
def test_render_stage_budget_overruns_are_counted(
    stage_budget_ms: float, overruns: int, ipc_dir: Path
) -> None:
    cfg = render_config(
        {"stage_budget_ms": stage_budget_ms, "hud": False}, ipc_endpoint(ipc_dir, "in")
    )
    with render_stage(cfg, SteppingClock(step_ms=10.0)) as (rt, tx):  # >= 2 steps a frame
        send_all(tx, frames(6))
    assert rt.stats.counters["out"] == 6
    assert rt.stats.counters["stage_overruns"] == overruns
    snapshot = rt.stats.snapshot()
    report = build_report(cfg, [snapshot], 1.0, {}, "test")
    assert report["budget"]["stage_overruns"] == ({"render": 6} if overruns else {})
    assert ("stage budget overruns: render 6" in format_report(report)) == bool(overruns)


def rendered_images(
    tmp_path: Any, stage: dict[str, Any], batch: list[Frame]
) -> tuple[list[np.ndarray], StageRuntime]:
    """Run the render stage over `batch`; the rendered images (from a recorder sink)."""
    from stream.recording import RecordingReader

    rec = tmp_path / "out.msrec"
    sinks = [{"type": "recorder", "path": str(rec), "rendered": True, "overwrite": True}]
    cfg = render_config({**stage, "sinks": sinks}, ipc_endpoint(tmp_path, "in"))
    with render_stage(cfg, SteppingClock(step_ms=0.001)) as (rt, tx):
        send_all(tx, batch)
    with RecordingReader(rec) as reader:
        images = [np.array(f.parts["rendered"]) for f in reader]
    return images, rt


def echo_frames(n: int, meta: dict[str, Any], **extra: Any) -> list[Frame]:
    from stream.sources.dicom import DicomSource, DicomSpec

    from .test_io_pipeline import ECHO

    source = DicomSource(DicomSpec(path=str(ECHO)))
    cap = source.read()
    source.close()
    assert cap is not None
    return frames(n, image=cap.image, meta=meta, **extra)


OFF = {"hud": False, "scale_bar": False, "orientation": False}
GEOMETRY = {"pixel_spacing_mm": [0.25, 0.25], "patient_orientation": ["L", "P"]}


def bgr(frame: Frame) -> np.ndarray:
    from stream.render.color import to_bgr

    return to_bgr(frame.image, frame.pixel_format)


def test_pieces_switched_off_leave_the_real_frame_untouched(tmp_path: Any) -> None:
    batch = echo_frames(2, GEOMETRY)
    images, _ = rendered_images(tmp_path, OFF, batch)
    assert len(images) == 2 and np.array_equal(images[0], bgr(batch[0]))
    images, _ = rendered_images(tmp_path, {"hud": False}, batch)  # scale bar, orientation on
    assert not np.array_equal(images[0], bgr(batch[0]))


@pytest.mark.parametrize("piece", ["hud", "scale_bar", "orientation"])
@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_each_piece_is_drawn_in_its_corner_only(tmp_path: Any, piece: str, corner: str) -> None:
    batch = echo_frames(1, GEOMETRY)
    stage = {**OFF, piece: True, f"{piece}_corner": corner}
    images, _ = rendered_images(tmp_path, stage, batch)
    changed = (images[0] != bgr(batch[0])).any(axis=2)
    h, w = changed.shape
    ys, xs = np.nonzero(changed)
    assert len(ys) > 50, "nothing drawn"
    quadrant_x = xs >= w // 2 if corner.endswith("right") else xs < w // 2
    quadrant_y = ys >= h // 2 if corner.startswith("bottom") else ys < h // 2
    assert quadrant_x.all() and quadrant_y.all(), (xs.min(), xs.max(), ys.min(), ys.max())


def test_a_suspect_spacing_is_a_note_not_a_scale_bar(tmp_path: Any) -> None:
    from stream.render.scale import ScaleBarAnnotator, SpacingNoteAnnotator

    suspect = {"pixel_spacing_mm": [0.51, 0.51], "pixel_spacing_suspect": "region outside"}
    stage = {**OFF, "scale_bar": True}
    batch = echo_frames(1, suspect)
    images, _ = rendered_images(tmp_path, stage, batch)
    assert np.array_equal(images[0], SpacingNoteAnnotator().annotate(bgr(batch[0])))
    confirmed = echo_frames(1, {"pixel_spacing_mm": [0.51, 0.51]})
    images, _ = rendered_images(tmp_path, stage, confirmed)
    assert np.array_equal(images[0], ScaleBarAnnotator().annotate(bgr(confirmed[0]), (0.51, 0.51)))


def test_two_pieces_in_one_corner_and_unknown_corners_are_config_errors() -> None:
    from stream.spec import ConfigError

    with pytest.raises(ConfigError, match=r"stages\[0\]\.scale_bar_corner: hud is in the top-left"):
        render_config({"scale_bar_corner": "top-left"})
    render_config({"scale_bar_corner": "top-left", "hud": False})  # switched off: no clash
    render_config({"orientation_corner": "edges"})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.hud_corner: .*'top-left'"):
        render_config({"hud_corner": "middle"})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.show: .*'side_by_side'"):
        render_config({"show": "both"})


def denoised(batch: list[Frame]) -> list[Frame]:
    """The frames as a denoiser's infer stage sends them: an `output` part (gray, same size)."""
    out = []
    for f in batch:
        gray = cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY)
        clean = cv2.GaussianBlur(gray, (9, 9), 0)
        out.append(
            Frame(
                f.stream,
                f.seq,
                f.capture_ns,
                f.deadline_ns,
                f.image,
                f.pixel_format,
                epoch=f.epoch,
                parts={"output": clean},
            )
        )
    return out


@pytest.mark.parametrize("show", ["auto", "output", "input", "side_by_side"])
def test_show_picks_the_input_the_model_output_or_both(tmp_path: Any, show: str) -> None:
    batch = denoised(echo_frames(2, {}))
    images, rt = rendered_images(tmp_path, {**OFF, "show": show}, batch)
    inp = bgr(batch[0])
    out = cv2.cvtColor(batch[0].parts["output"], cv2.COLOR_GRAY2BGR)
    want = {
        "auto": out,
        "output": out,
        "input": inp,
        "side_by_side": np.hstack((inp, out)),
    }[show]
    assert np.array_equal(images[0], want)
    assert rt.stats.counters["frames_without_output"] == 0


@pytest.mark.parametrize(("show", "width"), [("auto", 320), ("output", 320), ("side_by_side", 640)])
def test_without_a_model_output_the_input_is_shown(tmp_path: Any, show: str, width: int) -> None:
    batch = echo_frames(2, {})
    images, rt = rendered_images(tmp_path, {**OFF, "show": show}, batch)
    assert images[0].shape == (240, width, 3)
    assert np.array_equal(images[0][:, :320], bgr(batch[0]))
    assert rt.stats.counters["frames_without_output"] == (0 if show == "auto" else 2)
