"""Detection postprocess: a model's raw outputs -> `Box`es in image pixels.

The card's `output.layout` (written by `medstream model add`, engines/model_add.py) says how to
read the outputs; `output.outputs` maps roles to output names. Box coordinates are in
model-input pixels (`output.box_units: "pixels"`, the default) or in 0..1 of the input's width
and height (`"normalized"`).

  yolo_4+C_N        1 x (4+C) x N: cx, cy, w, h, then C class scores   (YOLOv8 and later)
  yolo_N_5+C        1 x N x (5+C): cx, cy, w, h, objectness, C class scores (YOLOv5);
                    score = objectness x class score
  ssd_boxes_scores  boxes 1 x N x 4 (x1, y1, x2, y2), scores 1 x N x C
  nms_K_6           1 x K x 6 (or K x 6): x1, y1, x2, y2, score, class   (NMS in the graph)
  nms_K_7           K x 7 (or 1 x K x 7): batch, x1, y1, x2, y2, class, score (ONNX NMS exports;
                    batch 0 kept)
  nms_split         boxes 1 x K x 4, scores 1 x K, labels 1 x K (and num: the first num rows)

Each candidate keeps its best class and that class's score. Then: scores below the confidence
threshold are dropped; the raw layouts go through class-aware NMS (OpenCV's
`cv2.dnn.NMSBoxesBatched`: boxes of different classes never suppress each other), keeping at
most `max_boxes`, best first; the NMS-in-graph layouts skip NMS and keep the `max_boxes` best.
Boxes beyond `max_boxes` are not dropped silently: `detect` says how many it cut. Finally the
boxes are mapped back through the letterbox to image pixels and clipped to the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from engines.api import Box
from engines.letterbox import Letterbox

RAW_LAYOUTS = ("yolo_4+C_N", "yolo_N_5+C", "ssd_boxes_scores")
NMS_LAYOUTS = ("nms_K_6", "nms_K_7", "nms_split")
LAYOUTS = RAW_LAYOUTS + NMS_LAYOUTS
ROLES = {  # layout -> output roles the card must name (`output.outputs`)
    "yolo_4+C_N": ("output",),
    "yolo_N_5+C": ("output",),
    "ssd_boxes_scores": ("boxes", "scores"),
    "nms_K_6": ("output",),
    "nms_K_7": ("output",),
    "nms_split": ("boxes", "scores", "labels"),
}
BOX_UNITS = ("pixels", "normalized")


@dataclass(frozen=True)
class DetectionSettings:
    """The run-time knobs (config `engine:` keys conf_threshold, iou_threshold, max_boxes)."""

    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_boxes: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf_threshold <= 1.0 or not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(
                f"conf_threshold and iou_threshold must be in [0, 1], got "
                f"{self.conf_threshold} and {self.iou_threshold}"
            )
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {self.max_boxes}")


@dataclass(frozen=True)
class Candidates:
    """Decoded boxes before thresholding: x0, y0, x1, y1 in model-input pixels."""

    xyxy: np.ndarray  # N x 4 float32
    scores: np.ndarray  # N float32
    classes: np.ndarray  # N int64


@dataclass(frozen=True)
class DetectionDecoder:
    """How to read one detection card's outputs (`from_card` checks the card)."""

    layout: str
    outputs: dict[str, str]  # role -> output name
    num_classes: int
    input_height: int
    input_width: int
    box_units: str = "pixels"

    @classmethod
    def from_card(
        cls, output: dict[str, Any], num_classes: int, height: int, width: int, where: str
    ) -> DetectionDecoder:
        """The decoder for a card's `output` section; `ValueError` naming the key if unusable."""
        layout = output.get("layout")
        if layout not in LAYOUTS:
            raise ValueError(
                f"{where}: output.layout must be one of {', '.join(LAYOUTS)} for a detection "
                f"model, got {layout!r:.60}"
            )
        roles = output.get("outputs", {"output": output.get("name")})
        if not isinstance(roles, dict) or not all(
            isinstance(roles.get(r), str) and roles[r] for r in ROLES[layout]
        ):
            raise ValueError(
                f"{where}: output.outputs must name the {layout} outputs "
                f"({', '.join(ROLES[layout])}), got {roles!r:.80}"
            )
        units = output.get("box_units", "pixels")
        if units not in BOX_UNITS:
            raise ValueError(f"{where}: output.box_units must be pixels or normalized, got {units!r:.40}")
        return cls(layout, dict(roles), num_classes, height, width, units)

    @property
    def output_names(self) -> list[str]:
        return [self.outputs[r] for r in ROLES[self.layout]] + (
            [self.outputs["num"]] if self.layout == "nms_split" and "num" in self.outputs else []
        )

    def check_shapes(self, shapes: dict[str, tuple[int | str | None, ...]]) -> None:
        """`ValueError` if a declared output shape contradicts the layout and the label count
        (dynamic or unknown axes pass; each frame's outputs are checked again in `decode`)."""
        want = {"yolo_4+C_N": (1, 4 + self.num_classes), "yolo_N_5+C": (2, 5 + self.num_classes)}
        if self.layout in want:
            axis, n = want[self.layout]
            shape = shapes[self.outputs["output"]]
            if len(shape) == 3 and isinstance(shape[axis], int) and shape[axis] != n:
                raise ValueError(
                    f"output {self.outputs['output']!r} {list(shape)} is not {self.layout} with "
                    f"{self.num_classes} labels (axis {axis} should be {n})"
                )
        if self.layout == "ssd_boxes_scores":
            shape = shapes[self.outputs["scores"]]
            if len(shape) == 3 and isinstance(shape[2], int) and shape[2] != self.num_classes:
                raise ValueError(
                    f"SSD scores {self.outputs['scores']!r} {list(shape)}: {shape[2]} classes but "
                    f"{self.num_classes} labels"
                )

    @property
    def has_nms(self) -> bool:
        return self.layout in NMS_LAYOUTS

    def _get(self, outs: dict[str, np.ndarray], role: str) -> np.ndarray:
        return np.asarray(outs[self.outputs[role]], np.float32)

    def decode(self, outs: dict[str, np.ndarray]) -> Candidates:
        """The model's outputs (by name) -> every candidate box, its best class and score."""
        layout = self.layout
        if layout == "yolo_4+C_N":  # read as (4+C) x N: no transposed copy of the scores
            t = self._rows(outs, 4 + self.num_classes, transposed=True)
            classes = np.argmax(t[4:], axis=0)
            scores = np.take_along_axis(t[4:], classes[None], axis=0)[0]
            xyxy = _from_cxcywh(t[:4].T)
        elif layout == "yolo_N_5+C":
            t = self._rows(outs, 5 + self.num_classes, transposed=False)
            best, classes = _best(t[:, 5:])
            xyxy, scores = _from_cxcywh(t[:, :4]), t[:, 4] * best
        elif layout == "ssd_boxes_scores":
            boxes, cls = self._get(outs, "boxes"), self._get(outs, "scores")
            if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4:
                raise ValueError(f"SSD boxes must be 1 x N x 4, got {boxes.shape}")
            if cls.shape != (1, boxes.shape[1], self.num_classes):
                raise ValueError(
                    f"SSD scores must be 1 x {boxes.shape[1]} x {self.num_classes}, got {cls.shape}"
                )
            xyxy, (scores, classes) = boxes[0], _best(cls[0])
        elif layout == "nms_K_6":
            t = self._nms_rows(outs, 6)
            xyxy, scores, classes = t[:, :4], t[:, 4], t[:, 5]
        elif layout == "nms_K_7":
            t = self._nms_rows(outs, 7)
            t = t[t[:, 0] == 0]  # batch 0: the pipeline runs one frame at a time
            xyxy, scores, classes = t[:, 1:5], t[:, 6], t[:, 5]
        else:  # nms_split
            xyxy, scores, classes = self._split(outs)
        xyxy = np.array(xyxy, np.float32).reshape(-1, 4)
        xyxy = np.concatenate(  # corners in order, whatever the model wrote
            [np.minimum(xyxy[:, :2], xyxy[:, 2:]), np.maximum(xyxy[:, :2], xyxy[:, 2:])], axis=1
        )
        if self.box_units == "normalized":
            xyxy[:, 0::2] *= self.input_width
            xyxy[:, 1::2] *= self.input_height
        if not np.isfinite(xyxy).all() or not np.isfinite(scores).all():
            raise ValueError("the detection output holds NaN or infinite values")
        return Candidates(xyxy, np.asarray(scores, np.float32), np.rint(classes).astype(np.int64))

    def _rows(self, outs: dict[str, np.ndarray], width: int, transposed: bool) -> np.ndarray:
        """The one output as a 2-D array: width x N (`transposed`) or N x width."""
        t = self._get(outs, "output")
        want = f"1 x {width} x N" if transposed else f"1 x N x {width}"
        axis = 1 if transposed else 2
        if t.ndim != 3 or t.shape[0] != 1 or t.shape[axis] != width:
            raise ValueError(f"{self.layout} output must be {want}, got {t.shape}")
        return t[0]

    def _nms_rows(self, outs: dict[str, np.ndarray], width: int) -> np.ndarray:
        """NMS rows K x `width`, given as such or as 1 x K x `width`."""
        t = self._get(outs, "output")
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 2 or t.shape[1] != width:
            raise ValueError(f"NMS rows must be K x {width} or 1 x K x {width}, got {t.shape}")
        return t

    def _split(self, outs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes = self._get(outs, "boxes").reshape(-1, 4)
        scores = self._get(outs, "scores").reshape(-1)
        labels = self._get(outs, "labels").reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"nms_split: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels"
            )
        if "num" in self.outputs:
            n = int(np.asarray(outs[self.outputs["num"]]).reshape(-1)[0])
            if not 0 <= n <= len(boxes):
                raise ValueError(f"nms_split: num = {n} outside 0..{len(boxes)}")
            boxes, scores, labels = boxes[:n], scores[:n], labels[:n]
        return boxes, scores, labels


def _from_cxcywh(t: np.ndarray) -> np.ndarray:
    cx, cy, w, h = t[:, 0], t[:, 1], t[:, 2] / 2, t[:, 3] / 2
    return np.stack([cx - w, cy - h, cx + w, cy + h], axis=1)


def _best(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N x C class scores -> (best score, its class) per row."""
    classes = np.argmax(scores, axis=1)
    return np.take_along_axis(scores, classes[:, None], axis=1)[:, 0], classes


def select(c: Candidates, settings: DetectionSettings, nms: bool) -> tuple[np.ndarray, int]:
    """Indices of the kept candidates, best score first: above the threshold, then class-aware
    NMS (`nms`; NMS done in the graph: none), then the best `max_boxes`; and how many boxes
    that limit cut (they passed the threshold and NMS)."""
    keep = np.flatnonzero(c.scores >= settings.conf_threshold)
    if nms and keep.size:
        xyxy = c.xyxy[keep].astype(np.float64)
        rects = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in xyxy.tolist()]
        picked = cv2.dnn.NMSBoxesBatched(
            rects,
            c.scores[keep].astype(np.float32).tolist(),
            c.classes[keep].astype(np.int32).tolist(),
            float(settings.conf_threshold),
            float(settings.iou_threshold),
        )  # no top_k: OpenCV applies it before NMS, which would lose boxes NMS keeps
        keep = keep[np.asarray(picked, np.int64).reshape(-1)]
    order = keep[np.argsort(-c.scores[keep], kind="stable")]
    return order[: settings.max_boxes], max(0, len(order) - settings.max_boxes)


def detect(
    outs: dict[str, np.ndarray],
    decoder: DetectionDecoder,
    settings: DetectionSettings,
    placement: Letterbox,
) -> tuple[list[Box], int]:
    """Raw outputs -> boxes in image pixels (see the module docstring), and how many boxes
    `max_boxes` cut (found, above the threshold, kept by NMS, but not returned)."""
    c = decoder.decode(outs)
    idx, cut = select(c, settings, nms=not decoder.has_nms)
    classes = c.classes[idx]
    bad = classes[(classes < 0) | (classes >= decoder.num_classes)]
    if bad.size:
        raise ValueError(
            f"the model gave class {int(bad[0])}, but its card has {decoder.num_classes} labels"
        )
    xyxy = placement.to_image(c.xyxy[idx]).tolist()  # tolist: Python floats and ints
    rows = zip(xyxy, classes.tolist(), c.scores[idx].tolist(), strict=True)
    return [Box(x0, y0, x1, y1, k, s) for (x0, y0, x1, y1), k, s in rows], cut
