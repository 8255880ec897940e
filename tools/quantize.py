"""Make an int8 (Q/DQ) variant of a bundled ultrasound model, calibrated on phantom frames.

    python -m tools.quantize --model us-seg --out engines/models/us-seg-int8

The one command that regenerates `us-seg-int8` (model and card) after `us-seg` changes.
ONNX Runtime's static quantisation (`quantize_static`, QDQ format) with symmetric int8
activations and per-channel symmetric 7-bit weights (`reduce_range`: -64..64) on every
convolution, so that no u8 x s8 pair sum can saturate 16 bits on x86 CPUs without VNNI
(engines/precision.py; ONNX Runtime's quantisation docs recommend reduce_range there). Explicit
QuantizeLinear/DequantizeLinear nodes that ONNX Runtime runs on the CPU and TensorRT (10.x and 11.x, strongly typed) builds as
an int8 engine: one int8 model for both. Calibration: MinMax over preprocessed phantom frames
from training seeds. The card records the accuracy lost and the CPU time saved against the
fp32 model, both measured in the same run on the same frames, and (`by_cpu`) the int8-vs-fp32
agreement on this CPU and on ONNX Runtime's AVX2 kernels under `qemu-x86_64 -cpu Haswell`
(tools/int8_check.py; skipped, and said so in the card, where qemu-user is not installed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from engines.precision import INT16_MAX, max_u8s8_pair_sum
from engines.preprocess import preprocess
from engines.registry import resolve_model
from stream.sources.phantom import phantom_frame
from tools import int8_check
from tools.eval_common import parse_seeds, score_and_time
from tools.eval_denoise import evaluate_denoise
from tools.eval_seg import evaluate, phantom_set, spec_for_seed
from tools.machine import cpu_description
from tools.onnx_flops import count_flops
from tools.train_common import command_line, rounded, seed_text, write_card


class PhantomReader(CalibrationDataReader):
    """Preprocessed phantom frames, one batch-1 input at a time."""

    def __init__(self, model: str, seeds: list[int], frames_per_seed: int) -> None:
        card = resolve_model(model).card
        self._name = card.input.name
        self._items = iter(
            [
                preprocess(phantom_frame(spec, index).image, "gray8", card.input)
                for spec, index in phantom_set(seeds, frames_per_seed)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._items, None)
        return None if x is None else {self._name: x}


def quantize(model: str, out: Path, seeds: list[int], frames_per_seed: int) -> None:
    src = resolve_model(model).onnx_path
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out / "model.onnx"),
            PhantomReader(model, seeds, frames_per_seed),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,  # 7-bit weights: no u8s8 saturation without VNNI
            op_types_to_quantize=["Conv"],  # the arithmetic; resizes and concats stay float
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )


def int8_card(
    fp32_card: dict[str, Any], source: str, name: str, calibration: str, command: str
) -> dict[str, Any]:
    """The int8 model's card: the fp32 card's fields (those other tools add too), less what
    no longer holds (metrics, cost, the TorchScript file), plus how it was quantised."""
    card: dict[str, Any] = json.loads(json.dumps(fp32_card))
    for key in ("torchscript", "metrics", "cost", "vs_fp32", "by_cpu"):
        card.pop(key, None)
    for key in [k for k in card if k.startswith("metrics_")]:  # e.g. metrics_anatomy: fp32's
        card.pop(key)
    card.update(
        {
            "name": name,
            "description": f"int8 (Q/DQ) variant of {source}: " + card["description"],
            "precision": "int8",
            "quantization": {
                "source_model": source,
                "tool": "onnxruntime.quantization.quantize_static",
                "format": "QDQ (explicit QuantizeLinear / DequantizeLinear)",
                "quantized_ops": "Conv (resize, concat, add stay float)",
                "activations": "int8 symmetric, per tensor",
                "weights": "7-bit in int8 (-64..64, reduce_range), symmetric, per output channel",
                "why_7_bit": "x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) add pairs of "
                "u8 x s8 products in saturating 16 bits: 2 x 255 x 64 = 32640 cannot saturate, "
                "2 x 255 x 127 = 64770 can (engines/precision.py max_u8s8_pair_sum)",
                "calibration": calibration,
                "runs_on": "ONNX Runtime (CPU) and TensorRT 10.x / 11.x",
            },
            "command": command,
        }
    )
    return card


def by_cpu(model: Path, fp32: str) -> tuple[list[dict[str, Any]], str]:
    """int8 vs fp32 on this CPU and on an emulated AVX2-only CPU (tools/int8_check.py)."""
    check = argparse.Namespace(
        model=str(model), fp32=fp32, seeds=parse_seeds("2000-2015"), frames_per_seed=2,
        emulated=False,
    )  # fmt: skip
    rows = [int8_check.here(check)]
    note = "this CPU and ONNX Runtime's AVX2 kernels under qemu-x86_64 -cpu Haswell"
    try:
        rows.append(int8_check.emulated(check))
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        note = f"this CPU only; AVX2 path not measured: {e}"
    return [rounded(asdict(r), 4) for r in rows], note


def measure(model: str, task: str, seeds: list[int], frames: int, runs: int) -> dict:
    score = evaluate if task == "segmentation" else evaluate_denoise
    metrics, latency = score_and_time(
        model,
        lambda pipeline: score(pipeline, phantom_set(seeds, frames)),
        phantom_frame(spec_for_seed(seeds[0]), 0).image,
        "gray8",
        runs,
        warmup=min(20, runs),
    )
    return {"metrics": metrics, "latency": latency}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="us-seg", help="bundled fp32 model to quantise")
    p.add_argument("--out", type=Path, default=Path("engines/models/us-seg-int8"),
                   help="folder for model.onnx and card.json")  # fmt: skip
    p.add_argument("--calib-seeds", type=parse_seeds, default="0-15",
                   help="phantom seeds to calibrate on (training seeds)")  # fmt: skip
    p.add_argument("--calib-frames-per-seed", type=int, default=4, help="calibration frames per seed")
    p.add_argument("--test-seeds", type=parse_seeds, default="2000-2015",
                   help="held-out phantom seeds for the card's metrics")  # fmt: skip
    p.add_argument("--test-frames-per-seed", type=int, default=4, help="test frames per seed")
    p.add_argument("--latency-runs", type=int, default=200, help="timed calls per model")
    args = p.parse_args(argv)
    command = command_line("tools.quantize", argv)
    cv2.setNumThreads(1)
    ref = resolve_model(args.model)
    t0 = time.perf_counter()
    quantize(args.model, args.out, args.calib_seeds, args.calib_frames_per_seed)
    print(f"quantised {args.model} -> {args.out / 'model.onnx'} ({time.perf_counter() - t0:.0f} s)")

    card = int8_card(
        ref.card.raw,
        args.model,
        args.out.name,
        f"MinMax over phantom seeds {seed_text(args.calib_seeds)} "
        f"(training seeds), {args.calib_frames_per_seed} frames each",
        command,
    )
    write_card(args.out / "card.json", card)  # the pipeline needs it to load the model
    # measured alternately in one run, so both see the same machine load
    held_out = (card["task"], args.test_seeds, args.test_frames_per_seed, args.latency_runs)
    fp32 = measure(args.model, *held_out)
    int8 = measure(str(args.out / "model.onnx"), *held_out)
    key = "mean_foreground_dice" if card["task"] == "segmentation" else "psnr_db"
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 512x512, through the ONNX pipeline",
        **rounded(int8["metrics"]),
    }
    t32, t8 = fp32["latency"]["pipeline_median_ms"], int8["latency"]["pipeline_median_ms"]
    card["vs_fp32"] = {
        "metric": key,
        "fp32": round(fp32["metrics"][key], 4),
        "int8": round(int8["metrics"][key], 4),
        "lost": round(fp32["metrics"][key] - int8["metrics"][key], 4),
        "fp32_pipeline_median_ms": round(t32, 3),
        "int8_pipeline_median_ms": round(t8, 3),
        "cpu_time_saved_percent": round(100 * (t32 - t8) / t32, 1),
        "fp32_engine_median_ms": round(fp32["latency"]["engine_median_ms"], 3),
        "int8_engine_median_ms": round(int8["latency"]["engine_median_ms"], 3),
        "note": "same run, same frames, 1 thread, ONNX Runtime CPU; timings on a shared 2-core machine are noisy",
    }
    rows: list[dict[str, Any]] = []
    if card["task"] == "segmentation":
        rows, note = by_cpu(args.out / "model.onnx", args.model)
        card["by_cpu"] = {
            "data": "held-out phantom seeds 2000-2015, 2 frames each (tools/int8_check.py)",
            "measured_on": note,
            "rows": rows,
        }
    card["cost"] = {
        "gflops": round(count_flops(args.out / "model.onnx").gflops, 4),
        "gflops_definition": "2 x multiply-accumulates of the (now int8) Conv nodes, batch 1",
        "latency_ms": rounded(int8["latency"], 3),
        "cpu": cpu_description(),
        "onnx_bytes": (args.out / "model.onnx").stat().st_size,
    }
    pair = max_u8s8_pair_sum(args.out / "model.onnx")
    card["quantization"]["max_u8s8_pair_sum"] = pair
    write_card(args.out / "card.json", card)
    shutil.rmtree(args.out / "__pycache__", ignore_errors=True)
    print(json.dumps(card["vs_fp32"], indent=2))
    if rows:
        print(int8_check.table([int8_check.Int8Row(**r) for r in rows]))
    if pair > INT16_MAX:
        raise SystemExit(f"quantize: weights can saturate u8s8 pair sums ({pair} > {INT16_MAX})")


if __name__ == "__main__":
    main()
