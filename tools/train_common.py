"""What the training scripts share: ONNX + TorchScript export, card helpers, machine facts.

Every bundled network is exported twice from the same weights: `model.onnx` (ONNX Runtime,
TensorRT) and `model.pt` (TorchScript, for the PyTorch backend). The TorchScript file is built
*from the ONNX file's weights* (`torchscript_from_onnx`), so both artefacts describe one network:
BatchNorm is folded into the convolutions at ONNX export, and the torch network gets those
folded weights back with its BatchNorms set to the identity plus the folded bias.
"""

from __future__ import annotations

import json
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper
from torch import nn

from tools.machine import cpu_name as cpu_name  # re-exported for the training scripts


def export_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    input_name: str,
    output_name: str,
    opset: int = 17,
) -> None:
    """Export with the TorchScript exporter (no onnxscript needed), dynamic batch, then check."""
    model.eval()
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose: no onnxscript
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            do_constant_folding=True,
        )
    onnx.checker.check_model(onnx.load(str(path)))


def _conv_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every Conv2d in definition order, with the BatchNorm2d right after it (if any)."""
    mods = list(model.modules())
    pairs = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            pairs.append((m, nxt if isinstance(nxt, nn.BatchNorm2d) else None))
    return pairs


def load_onnx_weights(model: nn.Module, onnx_path: Path) -> nn.Module:
    """Give `model` the (BatchNorm-folded) weights of its own ONNX export, in conv order.

    Needs a network whose forward pass runs its convolutions in definition order (true of the
    tools' networks). Each BatchNorm becomes `x + bias`: weight 1, mean 0, var 1 - eps.
    """
    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    pairs = _conv_pairs(model)
    if len(convs) != len(pairs):
        raise ValueError(f"{onnx_path}: {len(convs)} Conv nodes, network has {len(pairs)} convs")
    with torch.no_grad():
        for node, (conv, bn) in zip(convs, pairs, strict=True):
            weight = inits[node.input[1]]
            bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0])
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"{onnx_path}: conv {node.name} {weight.shape} vs {conv.weight.shape}"
                )
            conv.weight.copy_(torch.from_numpy(np.array(weight)))
            if bn is None:
                if conv.bias is None:
                    raise ValueError(f"{onnx_path}: conv {node.name} has a bias the network lacks")
                conv.bias.copy_(torch.from_numpy(np.array(bias)))
            else:
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(bias)))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
    return model.eval()


def torchscript_from_onnx(
    model: nn.Module, onnx_path: Path, out: Path, example: torch.Tensor
) -> float:
    """Write TorchScript of `model` with the ONNX file's weights; return max |torch - onnx|."""
    load_onnx_weights(model, onnx_path)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        traced = torch.jit.freeze(traced)
        traced.save(str(out))
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        ref = session.run(None, {name: example.numpy()})[0]
        got = torch.jit.load(str(out))(example).numpy()
    return float(np.abs(ref - got).max())


def seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_card(path: Path, card: dict) -> None:
    path.write_text(json.dumps(card, indent=2) + "\n")


def rounded(values: dict, digits: int = 4) -> dict:
    """Floats rounded (recursively), for cards that stay readable."""
    out: dict = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out[k] = rounded(v, digits)
        elif isinstance(v, float):
            out[k] = round(v, digits)
        else:
            out[k] = v
    return out
