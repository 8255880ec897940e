"""Four streams at 30 fps through one batched infer stage, against batch 1 and against four
separate pipelines, in one run.

All three run `configs/multi_probe.yaml`'s four phantom probes (sizes and seeds as there), no
sinks, as real pipelines (`medstream run`, one process per stage):

- batched: the config as it is, one infer stage with `batch.max_batch: 4`;
- batch 1: the same graph with `max_batch: 1` (frames of the four streams one model call each);
- separate: four pipelines (grab -> infer -> render) side by side, one per probe.

CPU per frame is the CPU time the stage processes used while streaming (each from its first
frame out: `cpu_s` in the run report, start-up and model loading left out) divided by the
frames they handed on: for the infer stages alone, and for the whole graph per delivered
frame. Glass-to-glass p99 is per stream, against that stream's budget.

Beside the pipelines, the model call alone in this process (`model_call_cpu`): CPU ms per frame
of the four probes' frames run one call each vs one `run_batch` call, and of the ONNX Runtime
session alone on ready tensors at batch 1 vs batch 4 (where batching can only save per-call
overhead).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stream.bundled_configs import bundled_config

CONFIG = bundled_config("multi_probe.yaml")
VARIANTS = ("batched", "batch 1", "separate")


def _base(tmp: Path, name: str) -> dict[str, Any]:
    data = yaml.safe_load(CONFIG.read_text())
    data["name"] = f"bench-multi-{name}"
    data["run_dir"] = str(tmp / name)
    data["stats_pub"] = ""
    data["frame_log"] = ""
    for stage in data["stages"]:
        if stage["kind"] == "render":
            stage["sinks"] = []
    return data


def write_configs(tmp: Path, variant: str) -> list[Path]:
    """The config(s) of one variant, written under `tmp`."""
    tag = variant.replace(" ", "")
    data = _base(tmp, tag)
    infer = next(s for s in data["stages"] if s["kind"] == "infer")
    if variant != "separate":
        infer["batch"]["max_batch"] = 4 if variant == "batched" else 1
        path = tmp / f"{tag}.yaml"
        path.write_text(yaml.safe_dump(data))
        return [path]
    grabs = [s for s in data["stages"] if s["kind"] == "grab"]
    render = next(s for s in data["stages"] if s["kind"] == "render")
    paths = []
    for grab in grabs:
        one = _base(tmp, f"{tag}-{grab['id']}")
        one["links"]["frames"]["bind"] = "producer"  # one producer: the usual direction
        one["stages"] = [grab, {**infer, "batch": {"max_batch": 1}}, render]
        path = tmp / f"{tag}-{grab['id']}.yaml"
        path.write_text(yaml.safe_dump(one))
        paths.append(path)
    return paths


def run_configs(paths: list[Path], seconds: float) -> list[dict[str, Any]]:
    """`medstream run` each config at the same time for `seconds`; their reports."""
    procs = []
    for path in paths:
        report = path.with_suffix(".json")
        cmd = [sys.executable, "-m", "stream.cli", "run", str(path), "--duration", f"{seconds:g}"]
        cmd += ["--report", str(report)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append((proc, report))
    reports = []
    for proc, report in procs:
        try:
            _, err = proc.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0 or not report.is_file():
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"medstream run {report.stem} failed: {' / '.join(tail)}")
        reports.append(json.loads(report.read_text()))
    return reports


def summarize(variant: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: CPU per frame (infer stages, whole graph) and per-stream glass-to-glass."""
    infer_cpu = total_cpu = 0.0
    inferred = delivered = captured = 0
    streams: dict[str, Any] = {}
    batches = batched = 0
    for r in reports:
        for st in r["stages"].values():
            total_cpu += st.get("cpu_s", 0.0)
            if st["kind"] == "infer":
                infer_cpu += st.get("cpu_s", 0.0)
                inferred += st["counters"].get("out", 0)
                batches += st["counters"].get("batches", 0)
                batched += st["counters"].get("batched_frames", 0)
        delivered += r["frames"]["delivered"]
        captured += r["frames"]["captured"]
        for sid, s in r.get("streams", {}).items():
            g = s["latency_ms"]["glass_to_glass"]
            streams[sid] = {
                "captured": s["frames"]["captured"],
                "delivered": s["frames"]["delivered"],
                "dropped": s["frames"]["dropped"],
                "g2g_p50_ms": g.get("p50"),
                "g2g_p99_ms": g.get("p99"),
                "budget_ms": s["budget_ms"],
                "p99_within_budget": g.get("p99") is not None and g["p99"] <= s["budget_ms"],
            }
    return {
        "variant": variant,
        "pipelines": len(reports),
        "captured": captured,
        "delivered": delivered,
        "inferred": inferred,
        "mean_batch": round(batched / batches, 2) if batches else 1.0,
        "infer_cpu_ms_per_frame": round(1000 * infer_cpu / inferred, 2) if inferred else None,
        "cpu_ms_per_delivered_frame": round(1000 * total_cpu / delivered, 2) if delivered else None,
        "streams": streams,
        "all_streams_within_budget": bool(streams)
        and all(s["p99_within_budget"] for s in streams.values()),
    }


def _cpu_ms(fn: Any, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) * 1000 / n


def model_call_cpu(repeats: int) -> dict[str, Any]:
    """CPU ms per frame: the probes' four frames one call each vs one batched call, and the
    ONNX Runtime session alone at batch 1 vs 4 (1 intra-op thread, as the configs)."""
    import numpy as np

    from engines import EngineSpec, load_pipeline
    from stream.sources import open_source

    data = yaml.safe_load(CONFIG.read_text())
    images = []
    for stage in (s for s in data["stages"] if s["kind"] == "grab"):
        source = open_source(stage["source"], "bench.source")
        cap = source.read()
        source.close()
        assert cap is not None
        images.append(cap.image)
    formats = ["gray8"] * len(images)
    pipeline = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime", threads=1))
    try:
        for _ in range(3):  # warm-up
            pipeline.run_batch(images, formats)  # type: ignore[attr-defined]
            pipeline(images[0], "gray8")
        n = len(images)
        one = _cpu_ms(lambda: [pipeline(im, "gray8") for im in images], repeats) / n
        batched = _cpu_ms(lambda: pipeline.run_batch(images, formats), repeats) / n  # type: ignore[attr-defined]
        engine = pipeline._engine  # type: ignore[attr-defined]
        name = engine.inputs[0].name
        x1 = np.zeros((1, 1, 256, 256), np.float32)
        x4 = np.zeros((n, 1, 256, 256), np.float32)
        session_1 = _cpu_ms(lambda: engine.run({name: x1}), repeats * n)
        session_4 = _cpu_ms(lambda: engine.run({name: x4}), repeats) / n
    finally:
        pipeline.close()
    return {
        "frames": [list(im.shape) for im in images],
        "pipeline_batch1_ms": round(one, 3),
        "pipeline_batched_ms": round(batched, 3),
        "session_batch1_ms": round(session_1, 3),
        "session_batch4_ms": round(session_4, 3),
    }


def bench_multistream(quick: bool, tmp: Path, say: Any = print) -> list[dict[str, Any]]:
    seconds = 6.0 if quick else 20.0
    rows: list[dict[str, Any]] = []
    say("bench: multistream model call alone (batch 1 vs batched)")
    rows.append({"variant": "model call", **model_call_cpu(10 if quick else 50)})
    for variant in VARIANTS:
        say(f"bench: multistream {variant} ({seconds:g} s)")
        t0 = time.monotonic()
        row = summarize(variant, run_configs(write_configs(tmp, variant), seconds))
        row["wall_s"] = round(time.monotonic() - t0, 1)
        rows.append(row)
    return rows


def _f(v: Any) -> str:
    return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def multistream_markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    call = next((r for r in rows if r["variant"] == "model call"), None)
    rows = [r for r in rows if r["variant"] != "model call"]
    base = next((r for r in rows if r["variant"] == "batch 1"), None)
    lines = [
        "## Four streams at 30 fps, one infer stage (configs/multi_probe.yaml, no sinks)",
        "",
        "| variant | pipelines | mean batch | infer CPU ms/frame | vs batch 1 | graph CPU ms/delivered frame "
        "| delivered / captured | g2g p99 ms per stream (budget) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = None
        if base and base["infer_cpu_ms_per_frame"] and r["infer_cpu_ms_per_frame"] is not None:
            ratio = round(r["infer_cpu_ms_per_frame"] / base["infer_cpu_ms_per_frame"], 2)
        per = ", ".join(
            f"{sid} {_f(s['g2g_p99_ms'])} ({s['budget_ms']:g}){'' if s['p99_within_budget'] else ' OVER'}"
            for sid, s in sorted(r["streams"].items())
        )
        lines.append(
            f"| {r['variant']} | {r['pipelines']} | {r['mean_batch']} | "
            f"{_f(r['infer_cpu_ms_per_frame'])} | {_f(ratio)}x | "
            f"{_f(r['cpu_ms_per_delivered_frame'])} | {r['delivered']} / {r['captured']} | {per} |"
        )
    if call is not None:
        lines += [
            "",
            "The model call alone, CPU ms per frame (the four probes' frames "
            f"{', '.join('x'.join(map(str, f)) for f in call['frames'])}): preprocess + us-seg + "
            f"postprocess one call each {call['pipeline_batch1_ms']}, one batched call "
            f"{call['pipeline_batched_ms']}; the ONNX Runtime session alone at batch 1 "
            f"{call['session_batch1_ms']}, at batch 4 {call['session_batch4_ms']}.",
        ]
    return lines + [""]
