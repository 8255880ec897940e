"""Write a bundled model's TorchScript file (`model.pt`) from the weights in its ONNX file.

    python -m tools.export_torchscript engines/models/us-seg

The network class and widths come from the card's `architecture`; BatchNorm-folded weights come
from model.onnx (tools/train_common.py), so the PyTorch backend runs the very same network as
ONNX Runtime. Adds `"torchscript": "model.pt"` to the card. Needs the `train` extra.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from tools.denoise_net import DenoiseNet
from tools.det_net import DetNet
from tools.seg_net import SegNet
from tools.train_common import torchscript_from_onnx, write_card


def network_for(card: dict) -> nn.Module:
    """An untrained network of the card's architecture (SegNet, DenoiseNet or DetNet)."""
    arch = card["architecture"]
    widths = tuple(arch["widths"])
    channels = 1 if card["input"]["channels"] == "gray" else 3
    if arch["name"].startswith("SegNet"):
        return SegNet(classes=len(card["labels"]), widths=widths, in_channels=channels)
    if arch["name"].startswith("DenoiseNet"):
        norm = card["normalization"]
        return DenoiseNet(
            norm["mean"][0], norm["std"][0], widths=widths, blocks=arch.get("blocks", 1)
        )
    if arch["name"].startswith("DetNet"):
        return DetNet(len(card["labels"]), card["input"]["height"], card["input"]["width"], widths)
    raise ValueError(f"no torch network for architecture {arch['name']!r}")


def export(folder: Path) -> float:
    """Write folder/model.pt, update the card; return max |torchscript - onnx| on a random input."""
    card = json.loads((folder / "card.json").read_text())
    inp = card["input"]
    channels = 1 if inp["channels"] == "gray" else 3
    example = torch.rand(
        1, channels, inp["height"], inp["width"], generator=torch.Generator().manual_seed(0)
    )
    diff = torchscript_from_onnx(
        network_for(card), folder / "model.onnx", folder / "model.pt", example
    )
    card["torchscript"] = "model.pt"
    write_card(folder / "card.json", card)
    return diff


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="model folder with model.onnx and card.json")
    args = p.parse_args(argv)
    diff = export(args.folder)
    print(f"wrote {args.folder / 'model.pt'}; max |torchscript - onnx| {diff:.2e}")


if __name__ == "__main__":
    main()
