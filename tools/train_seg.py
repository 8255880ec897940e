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

import cv2
import numpy as np
import torch

from engines import EngineSpec, load_pipeline
from stream.sources.phantom import LABELS
from tools.eval_common import parse_seeds
from tools.eval_seg import SCENES
from tools.seg_card import (
    PHANTOM_DATA,
    SIZE,
    add_held_out_metrics,
    kept_fields,
    onnx_torch_difference,
    parse_seg_args,
    print_held_out,
    seg_card_head,
    seg_data,
    seg_description,
    segmenter_training,
    train_segmenter,
    training_data_text,
)
from tools.seg_net import SegNet
from tools.train_common import (
    add_held_out_options,
    architecture_card,
    export_model,
    start_run,
    training_parser,
    versions,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "us-seg", epochs=15, lr=4e-3, train_seeds="0-95")
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
    return parse_seg_args(p, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, started, rng = start_run("tools.train_seg", args, argv)

    cv2.setNumThreads(args.threads)
    through = None
    if args.input_model:
        through = load_pipeline(EngineSpec(model=args.input_model, threads=args.threads))
    x_train, y_train, x_val, y_val, mean, std = seg_data(args, started, args.scene, through)
    if through is not None:
        through.close()

    model = SegNet(classes=len(LABELS)).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; its stub omits it
    data = (x_train, y_train, x_val, y_val)
    train_seconds = train_segmenter(model, args, rng, data, channels_last=True)
    onnx_path, _ = export_model(
        model, SegNet(classes=len(LABELS)), args.out, (1, 1, SIZE, SIZE), "logits"
    )
    diff = onnx_torch_difference(model, onnx_path, x_val[:1].astype(np.float32))
    size = onnx_path.stat().st_size / 1024
    print(f"model.onnx {size:.0f} KiB, max |onnx - torch| logit difference {diff:.2e}", flush=True)

    description = seg_description(args.scene)
    if args.input_model:
        description += f" Expects frames already denoised by {args.input_model} (a hybrid)."
    card_path = args.out / "card.json"
    card: dict = {
        **kept_fields(card_path),
        **seg_card_head(args.name, description, mean, std),
        "architecture": architecture_card("SegNet (tools/seg_net.py)", model),
        "training": segmenter_training(
            args,
            train_seconds,
            {
                "data": PHANTOM_DATA + (f", after {args.input_model}" if args.input_model else ""),
                "input_model": args.input_model,
            },
        ),
        "training_data": training_data_text(args.scene),
        "command": command,
        "versions": versions(),
    }
    add_held_out_metrics(
        card, card_path, onnx_path, args, args.latency_runs, args.scene, args.input_model
    )
    print_held_out(card, onnx_path, started)


if __name__ == "__main__":
    main()
