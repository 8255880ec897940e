"""The public interface of `engines`: what the infer stage (and tools) may use.

    spec = EngineSpec(model="us-seg", backend="auto")
    pipeline = load_pipeline(spec)        # preprocess -> engine -> postprocess
    result = pipeline(image, "gray8")     # InferenceResult
    pipeline.backend, pipeline.device, pipeline.precision   # what actually ran
    pipeline.selection                    # why that backend (one line)
    pipeline.card_info                    # intended use, training data, notice (may be absent)
    pipeline.confidence = False           # no per-pixel confidence map made (nobody draws it)

Also public: the leaf modules `engines.spec` (typed config sections) and `engines.pixels`
(pixel formats), which `stream` shares; they import nothing but the standard library and numpy.
Everything else in this package is internal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from engines.spec import bounded, section

BackendName = Literal["auto", "onnxruntime", "pytorch", "tensorrt", "classical"]


@dataclass
class EngineSpec:
    """The `engine:` section of an infer stage."""

    model: str = bounded(
        "us-seg",
        doc="bundled or user model name (see `medstream models`; `medstream model add` adds "
        "one), path to an .onnx file, a classical "
        "method (classical-median, classical-bilateral, classical-nlm, classical-guided, "
        "classical-otsu, classical-instruments), or a chain such as classical-median+us-seg",
    )
    backend: BackendName = bounded(
        "auto", doc="auto: TensorRT if usable, else ONNX Runtime (CUDA if usable, else CPU)"
    )
    threads: int = bounded(1, 1, 256, doc="intra-op CPU threads for the engine")
    optimization: Literal["disable", "basic", "extended", "all"] = bounded(
        "all", doc="ONNX Runtime graph optimisation level"
    )
    providers: list[str] = section(
        list,
        "ONNX Runtime execution providers in order; empty: CUDAExecutionProvider where "
        "usable, then CPUExecutionProvider",
    )
    precision: Literal["model", "fp16"] = bounded(
        "model",
        doc="TensorRT: model = as the ONNX file is (fp32, or int8 for a Q/DQ model); fp16 = "
        "build from an fp16 copy. Other backends run the file as it is",
    )
    engine_cache: str = bounded(
        "~/.cache/medstream/engines", doc="TensorRT: folder of built engines"
    )
    conf_threshold: float = bounded(
        0.25, 0.0, 1.0, doc="detection models: boxes scoring below this are dropped"
    )
    iou_threshold: float = bounded(
        0.45,
        0.0,
        1.0,
        doc="detection models: class-aware NMS drops a box overlapping a better one of its "
        "class by more than this IoU",
    )
    max_boxes: int = bounded(
        100,
        1,
        4096,
        doc="detection models: at most this many boxes per frame, best first (the infer stage "
        "counts the rest as boxes_cut)",
    )
    top_k: int = bounded(
        3, 1, 256, doc="classification models: the k most probable labels sent with each frame"
    )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in image pixel coordinates, with its label index and score: the one
    form of a box from the model to the overlay (`stream.frame` uses it; the wire carries it
    as `[x0, y0, x1, y1, label, score]`)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: int
    score: float


@dataclass
class InferenceResult:
    """What a pipeline says about one image.

    mask: uint8 label map at the input image's height x width (None for models without one);
    boxes: the detected boxes, in image pixels;
    boxes_cut: how many more boxes the detector found than `max_boxes` let into `boxes`;
    classes: a classifier's top-k (label index, probability), best first;
    image: an output image (e.g. a denoised frame) at the input size, or None;
    timings_ms: preprocess / engine / postprocess times;
    confidence: uint8 H x W per-pixel confidence of the mask (0..255 = 0..1), or None;
    applicability: `{"score", "threshold", "applicable", "method"}` from the model card's
    gate, or None when the card has none.
    """

    mask: np.ndarray | None
    boxes: list[Box] = field(default_factory=list)
    image: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    confidence: np.ndarray | None = None
    applicability: dict[str, Any] | None = None
    classes: list[tuple[int, float]] = field(default_factory=list)
    boxes_cut: int = 0


class InferencePipeline(Protocol):
    model_id: str
    task: str  # segmentation (mask), denoising (image), detection (boxes), classification
    # (classes); a chain: its last model's
    labels: list[str]
    backend: str
    device: str
    precision: str
    selection: str  # why this backend, one line (e.g. "auto: TensorRT not usable (...)")
    confidence: bool  # make a mask's per-pixel confidence map (True); False: result.confidence None

    def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult: ...

    def close(self) -> None: ...


class EngineUnavailable(RuntimeError):
    """A backend that cannot run here (missing package or device); the message says how to fix it."""
