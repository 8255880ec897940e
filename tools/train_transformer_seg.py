"""Train the transformer row's segmenter (tools/segformer_net.py) on phantoms; ONNX + card.

    python -m tools.train_transformer_seg        # the bundled us-seg-former: its card has
                                                 # the command
    python -m tools.train_transformer_seg --out /tmp/former --quick   # smoke run, seconds

The same data, labels, loss, held-out seeds and card as tools/train_seg.py (us-seg): phantom
frames downscaled by the pipeline's own preprocessing to 256 x 256, the classic and anatomy
scenes mixed by default. The network is a SegFormer-style encoder-decoder instead of a CNN.
`model.onnx` is exported from the trained network (opset 17; attention as MatMul + Softmax)
and `model.pt` is that network traced to TorchScript; both are checked against each other.
Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

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
from tools.segformer_net import SegFormer
from tools.train_common import (
    add_held_out_options,
    architecture_card,
    export_onnx,
    start_run,
    traced_torchscript,
    training_parser,
    versions,
)

MAX_TORCH_DIFFERENCE = 1e-4  # |ONNX Runtime - torch| and |ONNX - TorchScript| on logits


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "us-seg-former", epochs=40, lr=2e-3, train_seeds="0-255")
    p.add_argument("--val-seeds", type=parse_seeds, default=parse_seeds("1000-1011"))
    p.add_argument("--scene", choices=SCENES, default="mix", help="as tools/train_seg.py")
    add_held_out_options(p, frames_per_seed=8, latency_runs=200)
    return parse_seg_args(p, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, started, rng = start_run("tools.train_transformer_seg", args, argv)
    cv2.setNumThreads(args.threads)
    x_train, y_train, x_val, y_val, mean, std = seg_data(args, started, args.scene)
    model = SegFormer(classes=len(LABELS))
    train_seconds = train_segmenter(model, args, rng, (x_train, y_train, x_val, y_val))

    onnx_path = export_onnx(model, args.out, (1, 1, SIZE, SIZE), "logits")
    example = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    diffs = {
        "onnx_vs_torch": onnx_torch_difference(model, onnx_path, x_val[:2].astype(np.float32)),
        "onnx_vs_torchscript": traced_torchscript(model, onnx_path, args.out / "model.pt", example),
    }
    print(f"exported {onnx_path} ({onnx_path.stat().st_size / 1024:.0f} KiB), {diffs}", flush=True)
    bad = {k: v for k, v in diffs.items() if v > MAX_TORCH_DIFFERENCE}
    if bad:
        raise SystemExit(f"export disagrees with the trained network: {bad}")

    card_path = args.out / "card.json"
    description = seg_description(args.scene, by=" by a small SegFormer-style transformer")
    card: dict = {
        **kept_fields(card_path),
        **seg_card_head(args.name, description, mean, std),
        "training_data": training_data_text(args.scene),
        "architecture": {
            **architecture_card("SegFormer (tools/segformer_net.py)", model),
            "depths": list(model.depths),
            "decoder_width": model.decoder,
            "attention": "efficient self-attention, spatial reduction 8/4/2/1, heads 1/1/2/4",
        },
        "training": segmenter_training(args, train_seconds, {"data": PHANTOM_DATA}),
        "export_check": {k: float(f"{v:.2e}") for k, v in diffs.items()},
        "command": command,
        "versions": versions(),
    }
    add_held_out_metrics(card, card_path, onnx_path, args, args.latency_runs, args.scene)
    print_held_out(card, onnx_path, started)


if __name__ == "__main__":
    main()
