"""The ONNX Runtime engine: load an .onnx model, describe its tensors, run it.

Execution providers: those asked for, in order, else `default_providers()`: the CUDA provider
where this ONNX Runtime build has it and a GPU answers, then the CPU. ONNX Runtime falls back
to the next provider when one cannot start; `device` reports the one that actually runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape (int, or a str/None for a dynamic axis), dtype."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype


def _info(arg: ort.NodeArg) -> TensorInfo:
    if arg.type not in _ORT_DTYPES:
        raise ValueError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorInfo(arg.name, shape, _ORT_DTYPES[arg.type])


DEVICES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda (TensorRT EP)",
}


def default_providers() -> tuple[str, ...]:
    """CUDA where this build of ONNX Runtime has it and a CUDA device is usable; then CPU."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        from engines.backends import cuda_device_problem

        if cuda_device_problem() is None:
            return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


class OnnxRuntimeEngine:
    """One ONNX Runtime session (CPU by default; see the module docstring for providers).

    `threads` is the intra-op thread count; idle pool threads do not spin, so an engine leaves
    the CPU to the other stages of a pipeline between frames.
    """

    def __init__(
        self,
        path: Path | str,
        threads: int = 1,
        optimization: str = "all",
        providers: tuple[str, ...] = (),
        precision: str = "fp32",
    ) -> None:
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(
                f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {optimization!r}"
            )
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ValueError(
                f"execution provider {unknown[0]!r} is not in this ONNX Runtime build "
                f"(available: {', '.join(available)})"
            )
        providers = tuple(providers) or default_providers()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.path = Path(path)
        self._session: ort.InferenceSession | None = None
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as e:  # ORT raises several types for unreadable or invalid models
            raise ValueError(f"cannot load ONNX model {str(self.path)!r}: {e}") from None
        self.providers = tuple(self._session.get_providers())
        self.device = DEVICES.get(self.providers[0], self.providers[0])
        self.precision = precision
        self.inputs = tuple(_info(a) for a in self._session.get_inputs())
        self.outputs = tuple(_info(a) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    def _check(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {i.name for i in self.inputs}
        if set(feeds) != expected:
            raise ValueError(
                f"inputs must be exactly {sorted(expected)}, got {sorted(feeds)} ({self.path.name})"
            )
        for info in self.inputs:
            x = feeds[info.name]
            if not isinstance(x, np.ndarray) or x.dtype != info.dtype:
                got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
                raise ValueError(f"input {info.name!r} must be {info.dtype}, got {got}")
            if x.ndim != len(info.shape) or any(
                isinstance(d, int) and d != n for d, n in zip(info.shape, x.shape, strict=True)
            ):
                raise ValueError(f"input {info.name!r} must have shape {info.shape}, got {x.shape}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: every input by name -> every output by name."""
        if self._session is None:
            raise RuntimeError(f"engine for {self.path.name} is closed")
        self._check(feeds)
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._session = None
