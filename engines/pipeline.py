"""`load_pipeline`: a model's preprocess -> engine -> postprocess behind `InferencePipeline`."""

from __future__ import annotations

import time

import numpy as np

from engines.api import EngineSpec, EngineUnavailable, InferencePipeline, InferenceResult
from engines.onnxrt import OnnxRuntimeEngine
from engines.postprocess import labels_from_logits
from engines.preprocess import check_image, preprocess
from engines.registry import ModelError, ModelRef, resolve_model

_LATER = {
    "tensorrt": "the TensorRT engine is not implemented yet",
    "pytorch": "the PyTorch engine is not implemented yet",
    "classical": "the classical OpenCV engines are not implemented yet",
}


def resolve_backend(backend: str) -> str:
    """The backend that will run: `auto` is ONNX Runtime on the CPU until TensorRT exists."""
    if backend == "auto":
        return "onnxruntime"
    if backend in _LATER:
        raise EngineUnavailable(f"backend {backend!r}: {_LATER[backend]}; use onnxruntime or auto")
    if backend != "onnxruntime":
        raise ValueError(
            f"unknown backend {backend!r}; one of auto, onnxruntime, tensorrt, pytorch, classical"
        )
    return backend


class SegmentationPipeline:
    """Semantic segmentation with ONNX Runtime on the CPU: frame -> uint8 label map."""

    backend = "onnxruntime"
    device = "cpu"

    def __init__(self, ref: ModelRef, engine: OnnxRuntimeEngine) -> None:
        card = ref.card
        self.model_id = ref.model_id
        self.labels = list(card.labels)
        self.precision = {"float32": "fp32", "float16": "fp16"}[card.input.dtype]
        self._input = card.input
        self._output = card.output
        self._engine = engine
        self._check_model(ref)

    def _check_model(self, ref: ModelRef) -> None:
        """The card must describe the ONNX file: names, dtype, channels, size, classes."""
        inp = self._input
        where = f"model {ref.model_id!r}"
        infos = {i.name: i for i in self._engine.inputs}
        if list(infos) != [inp.name]:
            raise ModelError(f"{where}: card input {inp.name!r}, ONNX inputs {list(infos)}")
        info = infos[inp.name]
        want = (None, inp.num_channels, inp.height, inp.width)
        if (
            info.dtype != np.dtype(inp.dtype)
            or len(info.shape) != 4
            or any(
                isinstance(d, int) and w is not None and d != w
                for d, w in zip(info.shape, want, strict=True)
            )
        ):
            raise ModelError(
                f"{where}: ONNX input {info.shape} {info.dtype} does not match the card "
                f"(N x {inp.num_channels} x {inp.height} x {inp.width} {inp.dtype})"
            )
        outs = {o.name: o for o in self._engine.outputs}
        if self._output not in outs:
            raise ModelError(f"{where}: card output {self._output!r}, ONNX outputs {list(outs)}")
        classes = outs[self._output].shape[1] if len(outs[self._output].shape) == 4 else None
        if classes != len(self.labels) and isinstance(classes, int):
            raise ModelError(f"{where}: {classes} output classes but {len(self.labels)} labels")

    def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
        check_image(image, pixel_format)
        t0 = time.perf_counter()
        x = preprocess(image, pixel_format, self._input)
        t1 = time.perf_counter()
        logits = self._engine.run({self._input.name: x})[self._output]
        t2 = time.perf_counter()
        mask = labels_from_logits(logits, image.shape[:2])
        t3 = time.perf_counter()
        return InferenceResult(
            mask=mask,
            timings_ms={
                "preprocess": (t1 - t0) * 1e3,
                "engine": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            },
        )

    def close(self) -> None:
        self._engine.close()


def load_pipeline(spec: EngineSpec) -> InferencePipeline:
    """Resolve the backend and the model, load the engine, check the card against the model."""
    resolve_backend(spec.backend)
    ref = resolve_model(spec.model)
    if ref.card.task != "segmentation":
        raise ModelError(f"model {ref.model_id!r}: task {ref.card.task!r} is not supported yet")
    engine = OnnxRuntimeEngine(ref.onnx_path, spec.threads, spec.optimization)
    try:
        return SegmentationPipeline(ref, engine)
    except Exception:
        engine.close()
        raise
