"""Inference engines: `load_pipeline(EngineSpec(...))` and the bundled models (`list_models`)."""

from engines.api import EngineSpec, EngineUnavailable, InferencePipeline, InferenceResult
from engines.names import check_model
from engines.pipeline import load_pipeline
from engines.registry import ModelError, list_models

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
