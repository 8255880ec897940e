"""Card pieces of the phantom segmenters that are not tools/train_seg.py's SegNet runs.

tools/train_transformer_seg.py and tools/prune_seg.py write a card like train_seg's: the same
input, output, labels and training-data fields, and held-out metrics and cost measured the same
way (the exported ONNX file through the real pipeline at 512 x 512, tools/eval_seg.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from engines import InferencePipeline
from stream.sources.phantom import LABELS, phantom_frame
from tools.eval_common import score_and_time
from tools.eval_seg import evaluate, phantom_set, spec_for_seed
from tools.train_common import (
    cost_card,
    input_card,
    rounded,
    seed_text,
    segmentation_output_card,
    write_card,
)
from tools.train_seg import SIZE, training_data_text


def seg_card_head(name: str, description: str, mean: float, std: float, scene: str) -> dict:
    """name, task, description, labels, input, normalization, output, torchscript, data."""
    return {
        "name": name,
        "task": "segmentation",
        "description": description,
        "labels": list(LABELS),
        "input": input_card("gray", SIZE, SIZE),
        "normalization": {"mean": [mean], "std": [std], "applied_to": "pixel / 255"},
        "output": segmentation_output_card(len(LABELS), SIZE, SIZE),
        "torchscript": "model.pt",
        "training_data": training_data_text(scene),
    }


def onnx_torch_difference(model: nn.Module, onnx_path: Path, x: np.ndarray) -> float:
    """max |ONNX Runtime - torch| over the logits of `x` (N x 1 x 256 x 256)."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return float(np.abs(session.run(None, {"image": x})[0] - ref).max())


def traced_torchscript(model: nn.Module, onnx_path: Path, out: Path) -> float:
    """Trace and freeze `model` (eval) to `out`; return max |TorchScript - ONNX| on a random
    input (the same weights: the ONNX file was exported from this model)."""
    example = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        torch.jit.freeze(torch.jit.trace(model, example)).save(str(out))
        got = torch.jit.load(str(out))(example).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return float(np.abs(session.run(None, {"image": example.numpy()})[0] - got).max())


def add_held_out_metrics(
    card: dict,
    card_path: Path,
    onnx_path: Path,
    test_seeds: list[int],
    frames_per_seed: int,
    latency_runs: int,
    scenes: tuple[str, ...],
) -> None:
    """Write the card (the pipeline loads it), then its held-out metrics and cost, per scene."""
    write_card(card_path, card)
    by_scene: dict[str, dict[str, object]] = {}

    def evaluate_scenes(pipeline: InferencePipeline) -> dict[str, object]:
        for scene in scenes:
            frames = phantom_set(test_seeds, frames_per_seed, scene=scene)
            by_scene[scene] = evaluate(pipeline, frames)
        return by_scene[scenes[0]]

    metrics, latency = score_and_time(
        str(onnx_path),
        evaluate_scenes,
        phantom_frame(spec_for_seed(test_seeds[0]), 0).image,
        "gray8",
        latency_runs,
        warmup=min(20, latency_runs),
    )
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(test_seeds)}, {frames_per_seed} frames "
        "each, 512x512, through the ONNX pipeline",
        "dice_definition": "2TP / (2TP + FP + FN) per class, pixels of all frames pooled",
        **rounded(metrics),
    }
    if "anatomy" in by_scene:
        card["metrics_anatomy"] = {
            "data": f"held-out anatomy-scene phantom seeds {seed_text(test_seeds)}, "
            f"{frames_per_seed} frames each, 512x512 (bgr8 with UI and Doppler), "
            "through the ONNX pipeline",
            **rounded(by_scene["anatomy"]),
        }
    card["cost"] = cost_card(onnx_path, "256x256", "512x512 gray8", latency, "tools.eval_seg")
    write_card(card_path, card)
