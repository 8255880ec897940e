"""The PyTorch engine: a model's TorchScript file (`model.pt`, named by its card), CPU or CUDA.

For models that are not (or not only) ONNX. The bundled networks ship TorchScript built from
the same weights as their ONNX file (tools/train_common.py), so both backends agree (tested).
torch is imported only when this backend is chosen (the `train` extra installs it).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from engines.api import EngineUnavailable
from engines.onnxrt import TensorInfo
from engines.registry import ModelError, ModelRef


class TorchEngine:
    """A TorchScript module on CUDA if torch sees a GPU, else on the CPU."""

    def __init__(self, ref: ModelRef, threads: int = 1) -> None:
        if importlib.util.find_spec("torch") is None:
            raise EngineUnavailable("backend 'pytorch' needs torch: pip install 'medstream[train]'")
        import torch

        path = ref.torchscript_path
        if path is None:
            raise ModelError(
                f"model {ref.model_id!r} ships no TorchScript file (card key 'torchscript'); "
                "use backend onnxruntime"
            )
        if not path.is_file():
            raise ModelError(f"model {ref.model_id!r}: TorchScript file {str(path)!r} is missing")
        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(threads)  # process-wide: the stage owns its process
        try:
            self._module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as e:  # torch raises RuntimeError and others for bad archives
            raise ModelError(f"cannot load TorchScript {str(path)!r}: {e}") from None
        card = ref.card
        inp = card.input
        self.precision = "fp32"
        self.inputs: tuple[TensorInfo, ...] = (
            TensorInfo(
                inp.name, (None, inp.num_channels, inp.height, inp.width), np.dtype(inp.dtype)
            ),
        )
        # several outputs (an SSD pair, NMS boxes / scores / labels): the module returns a tuple
        # in the order of the card's `output.outputs`
        names = list(card.raw["output"].get("outputs", {}).values()) or [card.output]
        self.outputs: tuple[TensorInfo, ...] = tuple(
            TensorInfo(n, (None, None, None, None), np.dtype(np.float32)) for n in names
        )
        self._closed = False

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise RuntimeError("engine is closed")
        (info,) = self.inputs
        if set(feeds) != {info.name}:
            raise ValueError(f"inputs must be exactly ['{info.name}'], got {sorted(feeds)}")
        x = feeds[info.name]
        if x.dtype != info.dtype or x.ndim != 4 or tuple(x.shape[1:]) != info.shape[1:]:
            raise ValueError(f"input {info.name!r} must be N x {info.shape[1:]} {info.dtype}")
        torch = self._torch
        with torch.inference_mode():
            y = self._module(torch.from_numpy(x).to(self.device))
        ys = list(y) if isinstance(y, (tuple, list)) else [y]
        if len(ys) != len(self.outputs):
            raise ValueError(
                f"the TorchScript module returned {len(ys)} outputs, the card names "
                f"{len(self.outputs)}: {[o.name for o in self.outputs]}"
            )
        return {o.name: t.float().cpu().numpy() for o, t in zip(self.outputs, ys, strict=True)}

    def close(self) -> None:
        self._closed = True
        self._module = None
