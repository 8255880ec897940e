"""What the phantom segmenters' scripts share: data, card pieces, held-out metrics.

tools/train_seg.py (us-seg), tools/train_transformer_seg.py, tools/train_distill.py and
tools/prune_seg.py train on the same frames (phantom frames downscaled by the pipeline's own
preprocessing to 256 x 256, labels by nearest neighbour) and write a card with the same input,
output, labels and training-data fields, and held-out metrics and cost measured the same way
(the exported ONNX file through the real pipeline at 512 x 512, tools/eval_seg.py).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from engines import InferencePipeline
from engines.preprocess import preprocess
from engines.registry import ModelInput
from stream.sources.phantom import LABELS, phantom_frame, pixel_format_of
from tools.eval_common import confusion, dice_scores, score_and_time
from tools.eval_seg import evaluate, phantom_card, phantom_set, spec_for_seed
from tools.onnx_flops import count_flops
from tools.train_common import (
    check_training_args,
    cost_card,
    forward,
    input_card,
    mirrored_batch,
    nearest_labels,
    parse_training_args,
    rounded,
    run_card,
    schedule_card,
    seed_text,
    seeds_card,
    segmentation_loss,
    segmentation_output_card,
    train,
    write_card,
)

SIZE = 256
RAW_INPUT = ModelInput("image", "gray", SIZE, SIZE, "float32", (0.0,), (1.0,))  # pixel / 255
PHANTOM_DATA = "stream.sources.phantom, 512x512 frames downscaled to 256x256"
SEG_LOSS = "cross-entropy + (1 - mean foreground soft Dice)"
WRITTEN = {
    "name", "task", "description", "labels", "input", "normalization", "output", "torchscript",
    "architecture", "training", "training_data", "command", "versions", "metrics",
    "metrics_anatomy", "cost",
}  # fmt: skip
CLASSIC_DATA = (
    "classic phantom: strata, interfaces, hypo/hyperechoic lesions, vessels, cysts and "
    "bone on speckle; sector and linear probes; grey"
)
ANATOMY_DATA = (
    "anatomy phantom: cardiac, abdominal and vascular views (beating chambers, organs, cysts, "
    "stones, shadowing lesions, vessels); sector, linear, curvilinear probes; random depth, gain, "
    "TGC; UI outside the image, colour Doppler inside"
)  # the card's training_data is at most 400 characters (engines/registry.py)


def make_dataset(
    seeds: list[int],
    frames_per_seed: int,
    through: InferencePipeline | None = None,
    scene: str = "classic",
) -> tuple[np.ndarray, np.ndarray]:
    """(N x 1 x 256 x 256 float32 pixel/255, N x 256 x 256 uint8 labels) from phantom frames.

    Colour (bgr8) frames of the anatomy scene go through the pipeline's own grey conversion.
    `through`: a denoiser every frame goes through first (for a hybrid's segmenter).
    """
    images, labels = [], []
    for spec, index in phantom_set(seeds, frames_per_seed, scene=scene):
        frame = phantom_frame(spec, index)
        fmt = pixel_format_of(spec)
        image = frame.image
        if through is not None:
            result = through(image, fmt).image
            if result is None:
                raise ValueError(f"{through} gave no image to train on")
            image, fmt = result, "gray8"
        images.append(preprocess(image, fmt, RAW_INPUT)[0])
        labels.append(nearest_labels(frame.truth, SIZE, SIZE))
    return np.stack(images), np.stack(labels).astype(np.uint8)


def parse_seg_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse a phantom segmenter's options (`parse_training_args`); --quick also takes one
    validation seed, two held-out seeds and 5 latency runs. No training seed may be a
    validation or held-out one."""
    args = parse_training_args(p, argv)
    if args.quick:
        args.val_seeds, args.test_seeds, args.latency_runs = [1000], [2000, 2001], 5
    check_training_args(p, args, [*args.val_seeds, *args.test_seeds])
    return args


def seg_data(
    args: argparse.Namespace,
    started: float,
    scene: str = "classic",
    through: InferencePipeline | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(x_train, y_train, x_val, y_val, mean, std): the training frames of `args.train_seeds`
    and the validation frames of `args.val_seeds` (a quarter as many per seed), normalised by
    the training frames' rounded mean and std."""
    x_train, y_train = make_dataset(args.train_seeds, args.frames_per_seed, through, scene)
    x_val, y_val = make_dataset(args.val_seeds, max(1, args.frames_per_seed // 4), through, scene)
    mean, std = round(float(x_train.mean()), 4), round(float(x_train.std()), 4)
    print(
        f"data: {len(x_train)} train / {len(x_val)} val frames, mean {mean} std {std} "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    return (x_train - mean) / std, y_train, (x_val - mean) / std, y_val, mean, std


def val_dice(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 16) -> float:
    """Mean foreground Dice of `model` (eval mode, then back to training) on `x` against `y`."""
    model.eval()
    with torch.no_grad():
        out = [
            model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy()
            for i in range(0, len(x), batch)
        ]
    model.train()
    conf = confusion(np.concatenate(out), y, len(LABELS))
    score = dice_scores(conf, LABELS)["mean_foreground_dice"]
    return float(score) if isinstance(score, float) else 0.0


def val_note(model: nn.Module, x: np.ndarray, y: np.ndarray) -> Callable[[list[float]], str]:
    """The epoch note: the mean loss and the validation mean foreground Dice."""
    return lambda losses: (
        f"loss {np.mean(losses):.4f}  val mean fg Dice {val_dice(model, x, y):.4f}"
    )


def train_segmenter(
    model: nn.Module,
    args: argparse.Namespace,
    rng: np.random.Generator,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    channels_last: bool = False,
) -> float:
    """Train `model` on `seg_data`'s (x_train, y_train, x_val, y_val): mirrored batches, SEG_LOSS,
    the validation Dice in each epoch's note (`train`); return the seconds taken.
    `channels_last`: batches in that memory format (as the model)."""
    x_train, y_train, x_val, y_val = data

    def step_loss() -> torch.Tensor:
        x, y = mirrored_batch(rng, args.batch, x_train, y_train)  # probes are symmetric
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return segmentation_loss(forward(model, x, args.precision), y.long())

    note = val_note(model, x_val, y_val)
    return train(model, step_loss, note, args.epochs, args.steps_per_epoch, args.lr)


def segmenter_training(args: argparse.Namespace, train_seconds: float, head: dict) -> dict:
    """The card's `training` of a `train_segmenter` run on `args.scene`; `head` (the data) first."""
    return {
        **head,
        **phantom_card(args.scene),
        **seeds_card(args),
        **schedule_card(args),
        "loss": SEG_LOSS,
        "augmentation": "left-right mirror",
        **run_card(args, train_seconds),
    }


def training_data_text(scene: str) -> str:
    """The card's `training_data`: what the frames the model learnt from contain."""
    parts = {"classic": [CLASSIC_DATA], "anatomy": [ANATOMY_DATA]}.get(
        scene, [CLASSIC_DATA, ANATOMY_DATA]
    )
    return "Synthetic only: " + "; ".join(parts) + ". No real patients."


def kept_fields(card_path: Path) -> dict:
    """Fields of an existing card these scripts do not write (e.g. applicability, notice)."""
    if not card_path.is_file():
        return {}
    try:
        old = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in old.items() if k not in WRITTEN} if isinstance(old, dict) else {}


def seg_description(scene: str, by: str = "", end: str = ".") -> str:
    """The card's description of a phantom segmenter: the task, `by` (e.g. ' by a small
    transformer'), the phantom `scene` it learnt from, then `end`."""
    scenes = "classic and anatomy scenes" if scene == "mix" else f"{scene} scene"
    return (
        "Ultrasound B-mode semantic segmentation (anechoic structures, lesions, bright "
        f"interfaces){by}, trained only on medstream's synthetic phantom ({scenes}){end}"
    )


def seg_card_head(name: str, description: str, mean: float, std: float) -> dict:
    """name, task, description, labels, input, normalization, output, torchscript."""
    return {
        "name": name,
        "task": "segmentation",
        "description": description,
        "labels": list(LABELS),
        "input": input_card("gray", SIZE, SIZE),
        "normalization": {"mean": [mean], "std": [std], "applied_to": "pixel / 255"},
        "output": segmentation_output_card(len(LABELS), SIZE, SIZE),
        "torchscript": "model.pt",
    }


def onnx_torch_difference(model: nn.Module, onnx_path: Path, x: np.ndarray) -> float:
    """max |ONNX Runtime - torch| over the logits of `x` (N x 1 x 256 x 256)."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return float(np.abs(session.run(None, {"image": x})[0] - ref).max())


def add_held_out_metrics(
    card: dict,
    card_path: Path,
    onnx_path: Path,
    args: argparse.Namespace,
    latency_runs: int,
    scene: str,
    input_model: str | None = None,
) -> None:
    """Write the card (the pipeline loads it), then its held-out metrics and cost: of the
    classic scene, and of the anatomy scene too unless the model learnt only the classic one;
    `args.test_frames_per_seed` frames of each of `args.test_seeds`, timed over `latency_runs`.

    `input_model`: the denoiser every frame goes through first (a hybrid's segmenter): the
    whole chain is scored and timed."""
    test_seeds, frames_per_seed = args.test_seeds, args.test_frames_per_seed
    write_card(card_path, card)
    scenes = ("classic", "anatomy") if scene != "classic" else ("classic",)
    by_scene: dict[str, dict[str, object]] = {}

    def evaluate_scenes(pipeline: InferencePipeline) -> dict[str, object]:
        for scene in scenes:
            frames = phantom_set(test_seeds, frames_per_seed, scene=scene)
            by_scene[scene] = evaluate(pipeline, frames)
        return by_scene[scenes[0]]

    metrics, latency = score_and_time(
        f"{input_model}+{onnx_path}" if input_model else str(onnx_path),
        evaluate_scenes,
        phantom_frame(spec_for_seed(test_seeds[0]), 0).image,
        "gray8",
        latency_runs,
        warmup=min(20, latency_runs),
    )
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(test_seeds)}, {frames_per_seed} frames "
        "each, 512x512, through the ONNX pipeline"
        + (f" {input_model}+{card['name']}" if input_model else ""),
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
    chain = f"the whole chain with {input_model}, " if input_model else ""
    card["cost"] = cost_card(
        onnx_path, "256x256", f"{chain}512x512 gray8", latency, "tools.eval_seg"
    )
    write_card(card_path, card)


def print_held_out(card: dict, onnx_path: Path, started: float) -> None:
    """Print the card's held-out Dice and accuracy (per scene), GFLOPs and pipeline time."""
    for scene, key in (("", "metrics"), ("anatomy ", "metrics_anatomy")):
        if key in card:
            m = card[key]
            print(
                f"held-out {scene}Dice {m['dice']}, mean fg {m['mean_foreground_dice']}, "
                f"accuracy {m['pixel_accuracy_fov']}",
                flush=True,
            )
    print(
        f"{count_flops(onnx_path).gflops:.3f} GFLOPs, pipeline "
        f"{card['cost']['latency_ms']['pipeline_median_ms']:.2f} ms median on 1 thread; "
        f"total {time.perf_counter() - started:.0f} s",
        flush=True,
    )
