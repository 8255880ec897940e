"""Inference engines: `load_pipeline(EngineSpec(...))` and the bundled models (`list_models`).

The names below are loaded on first use, so importing `engines.spec` or `engines.api` (as the
config loader does) does not load ONNX Runtime or OpenCV.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.api import EngineSpec, EngineUnavailable, InferencePipeline, InferenceResult
    from engines.names import check_model
    from engines.pipeline import load_pipeline
    from engines.registry import ModelError, list_models

_HOME = {
    "EngineSpec": "engines.api",
    "EngineUnavailable": "engines.api",
    "InferencePipeline": "engines.api",
    "InferenceResult": "engines.api",
    "ModelError": "engines.registry",
    "check_model": "engines.names",
    "list_models": "engines.registry",
    "load_pipeline": "engines.pipeline",
}
__all__ = [
    "EngineSpec",
    "EngineUnavailable",
    "InferencePipeline",
    "InferenceResult",
    "ModelError",
    "check_model",
    "list_models",
    "load_pipeline",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'engines' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
