"""`load_pipeline`: a model's preprocess -> engine -> postprocess behind `InferencePipeline`.

model "us-seg"                      one network on the backend chosen (engines/backends.py)
model "classical-nlm"               a classical OpenCV method (engines/classical.py)
model "classical-median+us-seg"     a chain: each denoiser's image feeds the next model
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from engines.api import EngineSpec, EngineUnavailable, InferencePipeline, InferenceResult
from engines.applicability import Gate
from engines.backends import Selection, select_backend
from engines.classification import top_k
from engines.detection import DetectionDecoder, DetectionSettings, detect
from engines.letterbox import Letterbox, letterbox
from engines.onnxrt import TensorInfo
from engines.postprocess import (
    confident_labels,
    image_from_output,
    labels_with_confidence,
    two_class_logits,
)
from engines.preprocess import check_image, preprocess
from engines.registry import ModelError, ModelRef, check_runnable, resolve_model


class TensorEngine(Protocol):
    """What every network backend offers: named tensors in, named tensors out."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    device: str
    precision: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def resolve_backend(backend: str, model: str = "us-seg") -> str:
    """The backend that will run `model` (see engines/backends.py)."""
    return select_backend(backend, model).backend


class ModelPipeline:
    """One network: frame -> label map (segmentation), image (denoising), boxes (detection) or
    top-k labels (classification). `spec` gives the detection and classification settings."""

    def __init__(
        self,
        ref: ModelRef,
        engine: TensorEngine,
        selection: Selection,
        spec: EngineSpec | None = None,
    ) -> None:
        card = ref.card
        spec = spec or EngineSpec()
        self.model_id = ref.model_id
        self.task = card.task
        self.labels = list(card.labels)
        self.backend = selection.backend
        self.selection = selection.reason
        self.device = engine.device
        self.precision = engine.precision
        self._input = card.input
        self._output = card.output
        self._scale = card.output_scale
        # one sigmoid channel (a user model, engines/model_add.py): "probabilities" or "logits"
        self._sigmoid = card.raw.get("output", {}).get("sigmoid")
        self._engine = engine
        self._frame_engine = hasattr(engine, "run_frame")
        self.card_info = card.info
        self.confidence_threshold = card.confidence_threshold
        self.confidence = True  # False: no confidence map made (a reader that never draws it)
        gate = card.raw.get("applicability")
        self.gate = None if gate is None else Gate.from_card(gate, ref.model_id)
        self._letterbox = card.fit == "letterbox"
        self._pad_value = card.pad_value
        reader = check_runnable(ref)  # how the output is read: a decoder, a scores kind, None
        self._decoder = reader if isinstance(reader, DetectionDecoder) else None
        self._scores = reader if isinstance(reader, str) else "logits"
        self._settings = DetectionSettings(spec.conf_threshold, spec.iou_threshold, spec.max_boxes)
        self._top_k = spec.top_k
        self._check_model(ref)

    def _check_model(self, ref: ModelRef) -> None:
        """The card must describe the model file: names, dtype, channels, size, classes."""
        inp = self._input
        where = f"model {ref.model_id!r}"
        infos = {i.name: i for i in self._engine.inputs}
        if list(infos) != [inp.name]:
            raise ModelError(f"{where}: card input {inp.name!r}, model inputs {list(infos)}")
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
                f"{where}: model input {info.shape} {info.dtype} does not match the card "
                f"(N x {inp.num_channels} x {inp.height} x {inp.width} {inp.dtype})"
            )
        outs = {o.name: o for o in self._engine.outputs}
        wanted_outs = self._decoder.output_names if self._decoder else [self._output]
        missing = [n for n in wanted_outs if n not in outs]
        if missing:
            raise ModelError(f"{where}: card output {missing[0]!r}, model outputs {list(outs)}")
        shapes = {name: info.shape for name, info in outs.items()}
        if self._decoder is not None:
            try:
                self._decoder.check_shapes(shapes)
            except ValueError as e:
                raise ModelError(f"{where}: {e}") from None
            return
        if self.task == "classification":
            shape = shapes[self._output]
            if len(shape) == 2 and isinstance(shape[1], int) and shape[1] != len(self.labels):
                raise ModelError(f"{where}: {shape[1]} output classes but {len(self.labels)} labels")
            return
        shape = outs[self._output].shape
        channels = shape[1] if len(shape) == 4 else None
        if self.task == "segmentation":
            wanted = 1 if self._sigmoid else len(self.labels)
            if channels != wanted and isinstance(channels, int):
                raise ModelError(
                    f"{where}: {channels} output classes but {len(self.labels)} labels"
                )
        elif isinstance(channels, int) and channels not in (1, 3):
            raise ModelError(f"{where}: a denoiser must output 1 or 3 channels, got {channels}")

    def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
        check_image(image, pixel_format)
        t0 = time.perf_counter()
        frame, placement = image, None
        if self._letterbox:  # a model-sized uint8 frame: the backends' resize is then a no-op
            frame, placement = letterbox(image, self._input.height, self._input.width, self._pad_value)
        if self._frame_engine:
            t1 = t0
            outs = self._engine.run_frame(frame, pixel_format)  # type: ignore[attr-defined]
        else:
            x = preprocess(frame, pixel_format, self._input)
            t1 = time.perf_counter()
            outs = self._engine.run({self._input.name: x})
        t2 = time.perf_counter()
        return self._result(outs, image, pixel_format, placement, {"preprocess": t1 - t0, "engine": t2 - t1})

    def _result(
        self,
        outs: dict[str, np.ndarray],
        image: np.ndarray,
        pixel_format: str,
        placement: Letterbox | None,
        timings_s: dict[str, float],
    ) -> InferenceResult:
        """Postprocess one image's outputs (batch 1) and apply the gate."""
        t2 = time.perf_counter()
        result = self._postprocess(outs, image, placement)
        t3 = time.perf_counter()
        if self.gate is not None:
            result.applicability = self.gate.assess(image, pixel_format)
        t4 = time.perf_counter()
        result.timings_ms = {k: v * 1e3 for k, v in timings_s.items()}
        result.timings_ms.update({"postprocess": (t3 - t2) * 1e3, "gate": (t4 - t3) * 1e3})
        return result

    def _postprocess(
        self, outs: dict[str, np.ndarray], image: np.ndarray, placement: Letterbox | None
    ) -> InferenceResult:
        if self._decoder is not None:
            h, w = image.shape[:2]
            if placement is None:  # a stretched input: per-axis scale, no padding
                placement = Letterbox(h, w, self._input.width / w, self._input.height / h, 0, 0)
            boxes, cut = detect(outs, self._decoder, self._settings, placement)
            return InferenceResult(mask=None, boxes=boxes, boxes_cut=cut)
        out = outs[self._output]
        if self.task == "classification":
            classes = top_k(out, self._top_k, self._scores, len(self.labels))
            return InferenceResult(mask=None, classes=classes)
        if self.task == "segmentation":
            if self._sigmoid:
                out = two_class_logits(out, self._sigmoid)
            if not self.confidence:
                mask = confident_labels(out, image.shape[:2], self.confidence_threshold)
                return InferenceResult(mask=mask)
            mask, confidence = labels_with_confidence(
                out, image.shape[:2], self.confidence_threshold
            )
            return InferenceResult(mask=mask, confidence=confidence)
        return InferenceResult(mask=None, image=image_from_output(out, image.shape[:2], self._scale))

    def run_batch(
        self, images: list[np.ndarray], pixel_formats: list[str]
    ) -> list[InferenceResult]:
        """Several images (of any sizes) in one engine call along the batch axis; one result
        per image, in order. A model whose batch axis is fixed runs them one at a time; an
        engine with a largest batch (`max_batch`: TensorRT's profile) takes them in chunks. Detectors
        and letterboxed inputs run one at a time (an NMS-in-graph output has no batch axis)."""
        if len(images) != len(pixel_formats):
            raise ValueError(f"{len(images)} images but {len(pixel_formats)} pixel formats")
        batch_axis = next(i.shape[0] for i in self._engine.inputs if i.name == self._input.name)
        if len(images) == 1 or isinstance(batch_axis, int) or self._decoder is not None or self._letterbox:
            return [self(im, pf) for im, pf in zip(images, pixel_formats, strict=True)]
        limit = getattr(self._engine, "max_batch", None)
        if isinstance(limit, int) and 0 < limit < len(images):
            return [
                r
                for i in range(0, len(images), limit)
                for r in self.run_batch(images[i : i + limit], pixel_formats[i : i + limit])
            ]
        for im, pf in zip(images, pixel_formats, strict=True):
            check_image(im, pf)
        t0 = time.perf_counter()
        if self._frame_engine:
            t1 = t0
            outs = self._engine.run_frames(images, pixel_formats)  # type: ignore[attr-defined]
        else:
            x = np.concatenate(
                [preprocess(im, pf, self._input) for im, pf in zip(images, pixel_formats, strict=True)]
            )
            t1 = time.perf_counter()
            outs = self._engine.run({self._input.name: x})
        t2 = time.perf_counter()
        out = outs[self._output]
        if out.shape[0] != len(images):
            raise ValueError(f"model gave {out.shape[0]} outputs for a batch of {len(images)}")
        n = len(images)
        timings = {"preprocess": (t1 - t0) / n, "engine": (t2 - t1) / n}  # per image, shared
        return [
            self._result({k: v[i : i + 1] for k, v in outs.items()}, im, pf, None, timings)
            for i, (im, pf) in enumerate(zip(images, pixel_formats, strict=True))
        ]

    def close(self) -> None:
        self._engine.close()


def _network_engine(spec: EngineSpec, ref: ModelRef, backend: str) -> TensorEngine:
    if backend == "onnxruntime":
        from engines.onnxrt import OnnxRuntimeEngine

        return OnnxRuntimeEngine(
            ref.onnx_path,
            spec.threads,
            spec.optimization,
            providers=tuple(spec.providers),
            precision=ref.card.precision,
        )
    if backend == "pytorch":
        from engines.torch_engine import TorchEngine

        return TorchEngine(ref, spec.threads)
    if backend == "tensorrt":
        from engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(ref, spec.precision, spec.engine_cache)
    raise EngineUnavailable(f"backend {backend!r} cannot run network {ref.model_id!r}")


def load_model(spec: EngineSpec, model: str) -> InferencePipeline:
    """One model (no chain): a classical method or a network."""
    selection = select_backend(spec.backend, model)
    if selection.backend == "classical":
        from engines.classical import ClassicalPipeline

        return ClassicalPipeline(model)
    ref = resolve_model(model)
    check_runnable(ref)
    engine = _network_engine(spec, ref, selection.backend)
    try:
        return ModelPipeline(ref, engine, selection, spec)
    except Exception:
        engine.close()
        raise


def load_pipeline(spec: EngineSpec) -> InferencePipeline:
    """Resolve the backend and the model(s), load the engine(s), check each card."""
    names = spec.model.split("+") if isinstance(spec.model, str) else [spec.model]
    if len(names) == 1:
        return load_model(spec, names[0])
    from engines.chain import ChainPipeline

    if any(not n for n in names):
        raise ModelError(f"model chain {spec.model!r}: empty name between '+'")
    loaded: list[InferencePipeline] = []
    try:
        for name in names:
            loaded.append(load_model(spec, name))
        return ChainPipeline(loaded)
    except Exception:
        for p in loaded:
            p.close()
        raise
