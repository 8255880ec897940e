"""Which backend runs a model: availability probes and the `auto` rule.

`auto` is TensorRT when the `tensorrt` and `pycuda` packages import and a CUDA device answers,
else ONNX Runtime (CUDA execution provider where ONNX Runtime has one and a GPU is present,
else the CPU). `classical-*` model names always run on the classical OpenCV backend. Every
probe returns a reason instead of raising, so the choice can be reported in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache

BACKENDS = ("auto", "onnxruntime", "pytorch", "tensorrt", "classical")
CLASSICAL_PREFIX = "classical-"


@dataclass(frozen=True)
class Selection:
    """The backend that will run, and why (one line, for logs and the run report)."""

    backend: str
    reason: str


def _missing(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"no module named {module!r} (pip install 'medstream[gpu]' on an NVIDIA host)"
    return None


@lru_cache(maxsize=1)
def cuda_device_problem() -> str | None:
    """None if pycuda sees a CUDA device, else why not."""
    missing = _missing("pycuda")
    if missing:
        return missing
    try:
        cuda = importlib.import_module("pycuda.driver")
        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA device found"
    except Exception as e:  # driver missing, no device, permissions: all mean "not usable"
        return f"CUDA is not usable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


def tensorrt_problem() -> str | None:
    """None if TensorRT can build and run engines here, else a one-line reason."""
    return _missing("tensorrt") or cuda_device_problem()


def select_backend(backend: str, model: str) -> Selection:
    """The backend for `model` under the spec's `backend` (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    if model.startswith(CLASSICAL_PREFIX):
        if backend not in ("auto", "classical"):
            raise ValueError(
                f"model {model!r} is a classical OpenCV method: use backend auto or classical"
            )
        return Selection("classical", "classical OpenCV method")
    if backend == "classical":
        raise ValueError(
            f"backend 'classical' runs the classical-* methods only, not {model!r} "
            "(see engines/classical.py for the names)"
        )
    if backend != "auto":
        return Selection(backend, "as configured")
    problem = tensorrt_problem()
    if problem is None:
        return Selection("tensorrt", "auto: TensorRT and a CUDA device are usable")
    return Selection("onnxruntime", f"auto: TensorRT not usable ({problem}); ONNX Runtime")
