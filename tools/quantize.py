"""Make an int8 (Q/DQ) variant of a bundled ultrasound model, calibrated on phantom frames.

    python -m tools.quantize --model us-seg --out engines/models/us-seg-int8

ONNX Runtime's static quantisation (`quantize_static`, QDQ format) with symmetric int8
activations and per-channel symmetric int8 weights on every convolution: explicit
QuantizeLinear/DequantizeLinear nodes that ONNX Runtime runs on the CPU and TensorRT (10.x and 11.x, strongly typed) builds as
an int8 engine: one int8 model for both. Calibration: MinMax over preprocessed phantom frames
from training seeds. The card records the accuracy lost and the CPU time saved against the
fp32 model, both measured in the same run on the same frames.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

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

from engines.preprocess import preprocess
from engines.registry import resolve_model
from stream.sources.phantom import phantom_frame
from tools.eval_common import parse_seeds, score_and_time
from tools.eval_denoise import evaluate_denoise
from tools.eval_seg import evaluate, phantom_set, spec_for_seed
from tools.machine import cpu_name
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
            op_types_to_quantize=["Conv"],  # the arithmetic; resizes and concats stay float
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="us-seg", help="bundled fp32 model to quantise")
    p.add_argument("--out", type=Path, default=Path("engines/models/us-seg-int8"))
    p.add_argument("--calib-seeds", type=parse_seeds, default=parse_seeds("0-15"))
    p.add_argument("--calib-frames-per-seed", type=int, default=4)
    p.add_argument("--test-seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    p.add_argument("--test-frames-per-seed", type=int, default=4)
    p.add_argument("--latency-runs", type=int, default=200)
    args = p.parse_args(argv)
    command = command_line("tools.quantize", argv)
    cv2.setNumThreads(1)
    ref = resolve_model(args.model)
    t0 = time.perf_counter()
    quantize(args.model, args.out, args.calib_seeds, args.calib_frames_per_seed)
    print(f"quantised {args.model} -> {args.out / 'model.onnx'} ({time.perf_counter() - t0:.0f} s)")

    card = json.loads(json.dumps(ref.card.raw))
    card.pop("torchscript", None)
    for key in ("metrics", "cost"):
        card.pop(key, None)
    name = args.out.name
    card.update(
        {
            "name": name,
            "description": f"int8 (Q/DQ) variant of {args.model}: " + card["description"],
            "precision": "int8",
            "quantization": {
                "source_model": args.model,
                "tool": "onnxruntime.quantization.quantize_static",
                "format": "QDQ (explicit QuantizeLinear / DequantizeLinear)",
                "quantized_ops": "Conv (resize, concat, add stay float)",
                "activations": "int8 symmetric, per tensor",
                "weights": "int8 symmetric, per output channel",
                "calibration": f"MinMax over phantom seeds {seed_text(args.calib_seeds)} "
                f"(training seeds), {args.calib_frames_per_seed} frames each",
                "runs_on": "ONNX Runtime (CPU) and TensorRT 10.x / 11.x",
            },
            "command": command,
        }
    )
    write_card(args.out / "card.json", card)  # the pipeline needs it to load the model
    # measured alternately in one run, so both see the same machine load
    fp32 = measure(
        args.model, card["task"], args.test_seeds, args.test_frames_per_seed, args.latency_runs
    )
    int8 = measure(
        str(args.out / "model.onnx"),
        card["task"],
        args.test_seeds,
        args.test_frames_per_seed,
        args.latency_runs,
    )
    key = "mean_foreground_dice" if card["task"] == "segmentation" else "psnr_db"
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 512x512, through the ONNX pipeline",
        **rounded({k: v for k, v in int8["metrics"].items()}),
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
    card["cost"] = {
        "gflops": round(count_flops(args.out / "model.onnx").gflops, 4),
        "gflops_definition": "2 x multiply-accumulates of the (now int8) Conv nodes, batch 1",
        "latency_ms": rounded(int8["latency"], 3),
        "cpu": cpu_name(),
        "onnx_bytes": (args.out / "model.onnx").stat().st_size,
    }
    write_card(args.out / "card.json", card)
    shutil.rmtree(args.out / "__pycache__", ignore_errors=True)
    print(json.dumps(card["vs_fp32"], indent=2))


if __name__ == "__main__":
    main()
