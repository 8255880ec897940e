"""The demo pipelines as separate processes against one Python process doing the same work.

Both sides run the same code on the same frames: the phantom source, the infer stage's
`annotate_frame` (preprocess -> ONNX Runtime -> postprocess) and the render stage's `Renderer`
(overlay + HUD), with no sinks, so the difference is the process split and the links. The
multi-process figures come from `medstream profile --run` (warm-up frames left out, the same
number as in the loop). Paced runs use the config's rate. For throughput, the loop runs as
fast as it can, and the pipeline is then offered frames at twice the rate the loop reached (like
a camera faster than the processing; an unpaced phantom would spend a core on frames that are
dropped): what it delivers is the rate it sustains.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stream.bundled_configs import bundled_config
from stream.config import GrabSpec, InferSpec, RenderSpec, load_config_file
from stream.frame import Frame
from stream.stages.base import StageRuntime
from stream.stages.infer import annotate_frame
from stream.stages.render import Renderer
from tools.profiling.cli import profile

DEMO = bundled_config("ultrasound_seg.yaml")
CTX = mp.get_context("spawn")
UNPACED_FPS = 1000.0

# name -> (width, height, what it stands for)
SCENES = {
    "ultrasound 512x512": (512, 512, "the demo: phantom 512x512 gray8"),
    "1080p surgical": (
        1920,
        1080,
        "phantom at 1920x1080 gray8: the us-seg model on 1080p frames, rendered to 1080p BGR "
        "(the endoscopy scene and its detector run at 640x480: configs/endoscopy_tool_tracking.yaml)",
    ),
}


def write_config(tmp: Path, scene: str, fps: float) -> Path:
    """The demo graph at the scene's size and rate, no sinks, its run dir under `tmp`."""
    width, height, _ = SCENES[scene]
    data = yaml.safe_load(DEMO.read_text())
    tag = f"{width}x{height}-{fps:g}"
    data["name"] = f"bench-{tag}"
    data["run_dir"] = str(tmp / tag)
    grab, _infer, render = data["stages"]
    grab["fps"] = fps
    grab["source"].update(width=width, height=height)
    render["sinks"] = []
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def multi_process(config: Path, seconds: float, warmup: int, out: Path) -> dict[str, Any]:
    """`medstream profile --run`: delivered fps and glass-to-glass of the multi-process graph."""
    summary = profile(str(config), out, seconds, warmup, True, None, 99.0, False)
    report = json.loads((out / "run_report.json").read_text())
    e2e = summary["end_to_end"]
    return {
        "fps": e2e["fps"],
        "g2g_p50_ms": e2e["p50"],
        "g2g_p99_ms": e2e["p99"],
        "delivered": e2e["delivered"],
        "captured": report["frames"]["captured"],
        "dropped": report["frames"]["dropped"],
        "profile": str(out),
    }


def _loop(config: str, seconds: float, warmup: int, unpaced: bool, results: Any) -> None:
    """Child process: grab -> annotate -> render in one loop, paced like the grab stage."""
    cfg = load_config_file(config)
    grab = next(s for s in cfg.stages if isinstance(s, GrabSpec))
    infer = next(s for s in cfg.stages if isinstance(s, InferSpec))
    render = next(s for s in cfg.stages if isinstance(s, RenderSpec))
    from engines import load_pipeline

    rt = StageRuntime(cfg, render, stats_endpoint="")
    source = grab.typed_source("bench").open()
    pipeline = load_pipeline(infer.engine)
    renderer = Renderer(rt, render, [])
    period_ns = int(1e9 / (grab.fps or 30.0))
    clock = rt.clock
    g2g: list[float] = []
    handoffs: list[int] = []
    behind = 0
    seq = 0
    t_next = clock.now_ns()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if not unpaced:
                clock.sleep_until_ns(t_next)
            cap = source.read()
            if cap is None:
                break
            capture = clock.now_ns()
            deadline = capture + rt.budget_ns
            frame = Frame("grab", seq, capture, deadline, cap.image, cap.pixel_format, 1, cap.parts)
            out = annotate_frame(frame, pipeline)
            renderer.render(out, out, None)
            if seq >= warmup:
                g2g.append((renderer.handoffs[-1] - capture) / 1e6)
                handoffs.append(renderer.handoffs[-1])
            seq += 1
            t_next += period_ns
            now = clock.now_ns()
            if now - t_next > period_ns:
                behind += (now - t_next) // period_ns
                t_next = now
    finally:
        pipeline.close()
        source.close()
        rt.close()
    span = (handoffs[-1] - handoffs[0]) / 1e9 if len(handoffs) > 1 else 0
    pct = lambda p: round(float(np.percentile(g2g, p, method="inverted_cdf")), 3) if g2g else None  # noqa: E731
    fps = round((len(handoffs) - 1) / span, 2) if span else None
    results.put(
        {
            "fps": fps,
            "g2g_p50_ms": pct(50),
            "g2g_p99_ms": pct(99),
            "delivered": len(handoffs),
            "frames_behind_schedule": int(behind),
        }
    )


def single_process(config: Path, seconds: float, warmup: int, unpaced: bool) -> dict[str, Any]:
    results = CTX.Queue()
    p = CTX.Process(target=_loop, args=(str(config), seconds, warmup, unpaced, results))
    p.start()
    try:
        return results.get(timeout=seconds + 120)
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()


def bench_scene(
    scene: str, fps: float, seconds: float, warmup: int, tmp: Path, out: Path
) -> list[dict[str, Any]]:
    """Paced at `fps`, then throughput: the pipeline and the single-process loop side by side."""

    def row(rate: str, single: dict[str, Any], config: Path) -> dict[str, Any]:
        """The loop's figures (`single`) beside the pipeline's, run now from `config`."""
        multi = multi_process(config, seconds, warmup, out / config.stem)
        return {
            "scene": scene,
            "source": SCENES[scene][2],
            "rate": rate,
            "single_process": single,
            "multi_process": multi,
        }

    config = write_config(tmp, scene, fps)
    paced = row(f"{fps:g} fps", single_process(config, seconds, warmup, unpaced=False), config)
    loop = single_process(config, seconds, warmup, unpaced=True)
    offered = min(UNPACED_FPS, round(2 * (loop["fps"] or fps)))
    rate = f"max (loop unpaced; pipeline offered {offered:g} fps)"
    return [paced, row(rate, loop, write_config(tmp, scene, offered))]
