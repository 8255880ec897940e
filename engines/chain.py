"""A chain of pipelines, e.g. `classical-median+us-seg` or `us-denoise+us-seg`.

Each model but the last must be a denoiser: its output image is the next model's input. The
result carries the last label map and the last image produced; timings are prefixed with the
model's position and name (`0:classical-median/engine`).
"""

from __future__ import annotations

import numpy as np

from engines.api import InferencePipeline, InferenceResult
from engines.registry import ModelError


class ChainPipeline:
    def __init__(self, stages: list[InferencePipeline]) -> None:
        if len(stages) < 2:
            raise ModelError("a chain needs at least two models")
        for p in stages[:-1]:
            if p.task != "denoising":
                raise ModelError(
                    f"chain: {p.model_id!r} is a {p.task} model; only denoisers can feed another model"
                )
        self.stages = stages
        last = stages[-1]
        self.model_id = "+".join(p.model_id for p in stages)
        self.task = last.task
        self.labels = list(last.labels)

        def joined(attr: str) -> str:
            values = [getattr(p, attr) for p in stages]
            return values[0] if len(set(values)) == 1 else "+".join(values)

        self.backend = joined("backend")
        self.device = joined("device")
        self.precision = joined("precision")
        self.selection = "; ".join(f"{p.model_id}: {p.selection}" for p in stages)
        self.card_info: dict[str, str] = dict(getattr(last, "card_info", {}))

    @property
    def confidence(self) -> bool:
        """The last model's `confidence` (only it can make a mask)."""
        return self.stages[-1].confidence

    @confidence.setter
    def confidence(self, on: bool) -> None:
        self.stages[-1].confidence = on

    def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
        out = InferenceResult(mask=None)
        for i, p in enumerate(self.stages):
            r = p(image, pixel_format)
            for k, v in r.timings_ms.items():
                out.timings_ms[f"{i}:{p.model_id}/{k}"] = v
            if r.image is not None:
                image = out.image = r.image
                pixel_format = "gray8" if image.ndim == 2 else pixel_format
            if r.mask is not None:
                out.mask, out.confidence = r.mask, r.confidence
            if r.applicability is not None:  # the gate of the last model that has one
                out.applicability = r.applicability
            if r.boxes:
                out.boxes, out.boxes_cut = r.boxes, r.boxes_cut
            if r.classes:
                out.classes = r.classes
        return out

    def close(self) -> None:
        for p in self.stages:
            p.close()
