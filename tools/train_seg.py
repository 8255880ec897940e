"""Train the bundled ultrasound segmentation model on synthetic phantoms; export ONNX + card.

    python -m tools.train_seg --out engines/models/us-seg --scene mix ...  # the bundled
                                                              # model: its card has the command
    python -m tools.train_seg --out /tmp/us-seg --quick       # smoke run, seconds
    python -m tools.train_seg --out engines/models/us-seg-dn --name us-seg-dn \
        --input-model us-denoise                              # the hybrid's segmenter

Needs the `train` extra (torch, onnx). Frames come from `stream.sources.phantom` (512 x 512,
even seeds sector, odd linear), downscaled by the inference pipeline's own preprocessing to
256 x 256; labels by nearest neighbour. Validation Dice (printed each epoch) uses held-out
seeds; the card's metrics come from other held-out seeds, run through the exported ONNX model
with the real pipeline at 512 x 512 (tools/eval_seg.py). With `--input-model`, every frame first
goes through that model's pipeline (e.g. the us-denoise speckle reducer), in training and in the
card's metrics (the chain `INPUT_MODEL+this`): a segmenter for a hybrid pipeline. Deterministic
for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch

from engines import EngineSpec, InferencePipeline, load_pipeline
from engines.preprocess import preprocess
from engines.registry import ModelInput
from stream.sources.phantom import LABELS, phantom_frame, pixel_format_of
from tools.eval_common import dice_scores, parse_seeds, score_and_time
from tools.eval_seg import SCENES, evaluate, phantom_card, phantom_set, spec_for_seed
from tools.onnx_flops import count_flops
from tools.seg_net import SegNet
from tools.train_common import (
    FRAME_INDICES,
    add_held_out_options,
    add_quick_option,
    add_training_options,
    apply_quick,
    architecture_card,
    check_training_args,
    command_line,
    cost_card,
    deterministic,
    export_onnx,
    forward,
    input_card,
    mirrored_batch,
    nearest_labels,
    rounded,
    run_card,
    schedule_card,
    seed_text,
    segmentation_loss,
    segmentation_output_card,
    torchscript_from_onnx,
    train,
    versions,
    write_card,
)

SIZE = 256
RAW_INPUT = ModelInput("image", "gray", SIZE, SIZE, "float32", (0.0,), (1.0,))  # pixel / 255


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


def predict(model: torch.nn.Module, x: np.ndarray, batch: int = 16) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [
            model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy()
            for i in range(0, len(x), batch)
        ]
    model.train()
    return np.concatenate(out)


def val_dice(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    pred = predict(model, x)
    n = len(LABELS)
    conf = np.bincount((y.astype(np.int64) * n + pred).ravel(), minlength=n * n).reshape(n, n)
    score = dice_scores(conf, LABELS)["mean_foreground_dice"]
    return float(score) if isinstance(score, float) else 0.0


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


def training_data_text(scene: str) -> str:
    """The card's `training_data`: what the frames the model learnt from contain."""
    parts = {"classic": [CLASSIC_DATA], "anatomy": [ANATOMY_DATA]}.get(
        scene, [CLASSIC_DATA, ANATOMY_DATA]
    )
    return "Synthetic only: " + "; ".join(parts) + ". No real patients."


def _kept_fields(card_path: Path) -> dict:
    """Fields of an existing card this script does not write (e.g. applicability, notice)."""
    if not card_path.is_file():
        return {}
    try:
        old = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in old.items() if k not in WRITTEN} if isinstance(old, dict) else {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_options(
        p, out="engines/models/us-seg", name="us-seg", epochs=15, lr=4e-3, train_seeds="0-95"
    )
    p.add_argument("--val-seeds", type=parse_seeds, default=parse_seeds("1000-1011"))
    p.add_argument(
        "--scene",
        choices=SCENES,
        default="classic",
        help="phantom scene of the training and validation frames (mix: classic and anatomy "
        "seeds alternate in pairs); held-out metrics are given for classic and anatomy",
    )
    add_held_out_options(p, frames_per_seed=12, latency_runs=200)
    p.add_argument(
        "--input-model", default=None, help="a denoiser every frame goes through first (hybrid)"
    )
    add_quick_option(p)
    args = p.parse_args(argv)
    if args.quick:
        apply_quick(args)
        args.val_seeds, args.test_seeds, args.latency_runs = [1000], [2000, 2001], 5
    check_training_args(p, args, [*args.val_seeds, *args.test_seeds])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = command_line("tools.train_seg", argv)
    started = time.perf_counter()
    rng = deterministic(args.seed, args.threads)

    cv2.setNumThreads(args.threads)
    through = None
    if args.input_model:
        through = load_pipeline(EngineSpec(model=args.input_model, threads=args.threads))
    x_train, y_train = make_dataset(args.train_seeds, args.frames_per_seed, through, args.scene)
    x_val, y_val = make_dataset(
        args.val_seeds, max(1, args.frames_per_seed // 4), through, args.scene
    )
    if through is not None:
        through.close()
    mean, std = round(float(x_train.mean()), 4), round(float(x_train.std()), 4)
    x_train = (x_train - mean) / std
    x_val = (x_val - mean) / std
    print(
        f"data: {len(x_train)} train / {len(x_val)} val frames, mean {mean} std {std} "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )

    model = SegNet(classes=len(LABELS)).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; its stub omits it

    def step_loss() -> torch.Tensor:
        x, y = mirrored_batch(rng, x_train, y_train, args.batch)  # probes are symmetric
        x = x.contiguous(memory_format=torch.channels_last)
        return segmentation_loss(forward(model, x, args.precision), y.long())

    train_seconds = train(
        model,
        step_loss,
        lambda losses: (
            f"loss {np.mean(losses):.4f}  val mean fg Dice {val_dice(model, x_val, y_val):.4f}"
        ),
        args.epochs,
        args.steps_per_epoch,
        args.lr,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    export_onnx(model, onnx_path, torch.zeros(1, 1, SIZE, SIZE), "image", "logits")
    torchscript_from_onnx(
        SegNet(classes=len(LABELS)),
        onnx_path,
        args.out / "model.pt",
        torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)),
    )
    check = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sample = x_val[:1].astype(np.float32)
    with torch.no_grad():
        diff = float(
            np.abs(
                check.run(None, {"image": sample})[0] - model(torch.from_numpy(sample)).numpy()
            ).max()
        )
    print(
        f"exported {onnx_path} ({onnx_path.stat().st_size / 1024:.0f} KiB), "
        f"max |onnx - torch| logit difference {diff:.2e}",
        flush=True,
    )

    description = (
        "Ultrasound B-mode semantic segmentation (anechoic structures, lesions, "
        "bright interfaces), trained only on medstream's synthetic phantom"
        + (" (classic and anatomy scenes)." if args.scene == "mix" else f" ({args.scene} scene).")
    )
    if args.input_model:
        description += f" Expects frames already denoised by {args.input_model} (a hybrid)."
    card: dict = {
        **_kept_fields(args.out / "card.json"),
        "name": args.name,
        "task": "segmentation",
        "description": description,
        "labels": list(LABELS),
        "input": input_card("gray", SIZE, SIZE),
        "normalization": {"mean": [mean], "std": [std], "applied_to": "pixel / 255"},
        "output": segmentation_output_card(len(LABELS), SIZE, SIZE),
        "torchscript": "model.pt",
        "architecture": architecture_card("SegNet (tools/seg_net.py)", model),
        "training": {
            "data": "stream.sources.phantom, 512x512 frames downscaled to 256x256"
            + (f", after {args.input_model}" if args.input_model else ""),
            "input_model": args.input_model,
            **phantom_card(args.scene),
            "train_seeds": seed_text(args.train_seeds),
            "val_seeds": seed_text(args.val_seeds),
            "frames_per_seed": args.frames_per_seed,
            "frame_indices": FRAME_INDICES,
            **schedule_card(args),
            "loss": "cross-entropy + (1 - mean foreground soft Dice)",
            "augmentation": "left-right mirror",
            **run_card(args, train_seconds),
        },
        "training_data": training_data_text(args.scene),
        "command": command,
        "versions": versions(),
    }
    write_card(args.out / "card.json", card)  # the pipeline needs it to load the model

    evaluated = f"{args.input_model}+{onnx_path}" if args.input_model else str(onnx_path)
    by_scene: dict[str, dict[str, object]] = {}

    def evaluate_scenes(pipeline: InferencePipeline) -> dict[str, object]:
        for scene in ("classic", "anatomy") if args.scene != "classic" else ("classic",):
            frames = phantom_set(args.test_seeds, args.test_frames_per_seed, scene=scene)
            by_scene[scene] = evaluate(pipeline, frames)
        return by_scene["classic"]

    metrics, latency = score_and_time(
        evaluated,
        evaluate_scenes,
        phantom_frame(spec_for_seed(args.test_seeds[0]), 0).image,
        "gray8",
        args.latency_runs,
        warmup=min(20, args.latency_runs),
    )
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 512x512, through the ONNX pipeline"
        + (f" {evaluated.replace(str(onnx_path), args.name)}" if args.input_model else ""),
        "dice_definition": "2TP / (2TP + FP + FN) per class, pixels of all frames pooled",
        **rounded(metrics),
    }
    if "anatomy" in by_scene:
        card["metrics_anatomy"] = {
            "data": f"held-out anatomy-scene phantom seeds {seed_text(args.test_seeds)}, "
            f"{args.test_frames_per_seed} frames each, 512x512 (bgr8 with UI and Doppler), "
            "through the ONNX pipeline",
            **rounded(by_scene["anatomy"]),
        }
    chain = f"the whole chain with {args.input_model}, " if args.input_model else ""
    card["cost"] = cost_card(
        onnx_path, "256x256", f"{chain}512x512 gray8", latency, "tools.eval_seg"
    )
    write_card(args.out / "card.json", card)
    print(
        f"held-out Dice {card['metrics']['dice']}, mean fg {card['metrics']['mean_foreground_dice']}, "
        f"accuracy {card['metrics']['pixel_accuracy_fov']}",
        flush=True,
    )
    if "metrics_anatomy" in card:
        m = card["metrics_anatomy"]
        print(
            f"held-out anatomy Dice {m['dice']}, mean fg {m['mean_foreground_dice']}, "
            f"accuracy {m['pixel_accuracy_fov']}",
            flush=True,
        )
    print(
        f"{count_flops(onnx_path).gflops:.3f} GFLOPs, pipeline {latency['pipeline_median_ms']:.2f} "
        f"ms median on 1 thread; total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
