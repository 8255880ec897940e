"""Inference backends behind one interface (see engines/api.py)."""

from .api import EngineSpec, EngineUnavailable, InferencePipeline, InferenceResult

__all__ = [
    "EngineSpec",
    "EngineUnavailable",
    "InferencePipeline",
    "InferenceResult",
    "load_pipeline",
]


def load_pipeline(spec: EngineSpec) -> InferencePipeline:
    raise EngineUnavailable("placeholder until the ONNX Runtime engine lands")
