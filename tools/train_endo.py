"""Train the bundled endoscopic instrument segmentation model; export ONNX, TorchScript, card.

    python -m tools.train_endo --out engines/models/endo-instruments     # the bundled model
    python -m tools.train_endo --out /tmp/endo --quick                   # smoke run, seconds

Needs the `train` extra. Frames come from `stream.sources.endoscopy` (640 x 480 BGR), downscaled
by the pipeline's own preprocessing to 320 x 240; labels (background, instrument) by nearest
neighbour. The card's metrics come from held-out seeds through the exported ONNX model and the
real pipeline (tools/eval_endo.py). Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from engines.preprocess import preprocess
from engines.registry import ModelInput
from stream.sources.endoscopy import LABELS, EndoscopySpec, endoscopy_frame
from tools.eval_common import score_and_time
from tools.eval_endo import endo_set, evaluate_endo
from tools.seg_net import SegNet
from tools.train_common import (
    add_held_out_options,
    architecture_card,
    check_training_args,
    cost_card,
    export_model,
    forward,
    input_card,
    loss_note,
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
    start_run,
    train,
    training_parser,
    versions,
    write_card,
)

WIDTH, HEIGHT = 320, 240
RAW = ModelInput("image", "bgr", HEIGHT, WIDTH, "float32", (0.0,) * 3, (1.0,) * 3)  # pixel / 255


def make_dataset(seeds: list[int], frames_per_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N x 3 x 240 x 320 float32 pixel/255 BGR, N x 240 x 320 int64 labels)."""
    images, labels = [], []
    for spec, index in endo_set(seeds, frames_per_seed):
        frame = endoscopy_frame(spec, index)
        images.append(preprocess(frame.image, "bgr8", RAW)[0])
        labels.append(nearest_labels(frame.truth, HEIGHT, WIDTH))
    return np.stack(images), np.stack(labels).astype(np.int64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "endo-instruments", epochs=12, lr=4e-3, train_seeds="0-79")
    add_held_out_options(p, frames_per_seed=8, latency_runs=100)
    args = parse_training_args(p, argv)
    check_training_args(p, args, args.test_seeds)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, started, rng = start_run("tools.train_endo", args, argv)

    x_train, y_train = make_dataset(args.train_seeds, args.frames_per_seed)
    mean = [round(float(v), 4) for v in x_train.mean((0, 2, 3))]
    std = [round(float(v), 4) for v in x_train.std((0, 2, 3))]
    m32, s32 = np.array(mean, np.float32)[:, None, None], np.array(std, np.float32)[:, None, None]
    x_train = (x_train - m32) / s32
    print(
        f"data: {len(x_train)} frames, mean {mean} std {std} ({time.perf_counter() - started:.1f} s)"
    )

    model = SegNet(classes=len(LABELS), in_channels=3)

    def step_loss() -> torch.Tensor:
        x, y = mirrored_batch(rng, args.batch, x_train, y_train)
        return segmentation_loss(forward(model, x, args.precision), y)

    train_seconds = train(model, step_loss, loss_note, args.epochs, args.steps_per_epoch, args.lr)
    onnx_path, _ = export_model(
        model, SegNet(classes=len(LABELS), in_channels=3), args.out, (1, 3, HEIGHT, WIDTH), "logits"
    )
    card: dict = {
        "name": args.name,
        "task": "segmentation",
        "description": "Surgical instrument segmentation in endoscopic video (background / "
        "instrument), trained only on medstream's synthetic endoscopy source.",
        "labels": list(LABELS),
        "input": input_card("bgr", HEIGHT, WIDTH),
        "normalization": {"mean": mean, "std": std, "applied_to": "pixel / 255, B, G, R"},
        "output": segmentation_output_card(len(LABELS), HEIGHT, WIDTH),
        "torchscript": "model.pt",
        "architecture": architecture_card("SegNet (tools/seg_net.py)", model, in_channels=3),
        "training": {
            "data": "stream.sources.endoscopy, 640x480 BGR frames downscaled to 320x240",
            **seeds_card(args),
            **schedule_card(args),
            "loss": "cross-entropy + (1 - instrument soft Dice)",
            "augmentation": "left-right mirror",
            **run_card(args, train_seconds),
        },
        "command": command,
        "versions": versions(),
    }
    write_card(args.out / "card.json", card)

    metrics, latency = score_and_time(
        str(onnx_path),
        lambda pipeline: evaluate_endo(
            pipeline, endo_set(args.test_seeds, args.test_frames_per_seed)
        ),
        endoscopy_frame(EndoscopySpec(seed=args.test_seeds[0]), 0).image,
        "bgr8",
        args.latency_runs,
        warmup=min(10, args.latency_runs),
    )
    card["metrics"] = {
        "data": f"held-out endoscopy seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 640x480, through the ONNX pipeline",
        "dice_definition": "2TP / (2TP + FP + FN) per class, pixels of all frames pooled",
        **rounded(metrics),
    }
    card["cost"] = cost_card(onnx_path, "320x240", "640x480 bgr8", latency, "tools.eval_endo")
    write_card(args.out / "card.json", card)
    dice = metrics["dice"]
    assert isinstance(dice, dict)
    print(
        f"held-out instrument Dice {dice['instrument']:.4f}, accuracy "
        f"{metrics['pixel_accuracy_fov']:.4f}; {card['cost']['gflops']} GFLOPs, "
        f"{latency['pipeline_median_ms']:.2f} ms median; total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
