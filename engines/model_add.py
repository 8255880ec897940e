"""`medstream model add`: a user's ONNX file -> a user model (model.onnx + card.json).

The input and output tensors are read from ONNX Runtime's session metadata (the base install
has ONNX Runtime, not the onnx package); the model is then run once on a synthetic frame on the
CPU, which also gives the output shapes that the graph leaves dynamic. From those shapes:

- segmentation: 1 x C x h x w, one channel per class (softmax logits or probabilities), or
  1 x 1 x h x w (one sigmoid channel; values in [0, 1] are read as probabilities, else logits);
- denoising: an output shaped like the input (1 x 1|3 x H x W);
- classification: 1 x C;
- detection: YOLO `1 x (4+C) x N` (YOLOv8) and `1 x N x (5+C)` (YOLOv5), NMS in the graph
  (`1 x K x 6`: x1, y1, x2, y2, score, class; `K x 7`: batch, x1, y1, x2, y2, class, score; or
  outputs named boxes / scores / labels|classes), and an SSD pair (boxes 1 x N x 4, scores 1 x N x C).

Where two tasks fit one shape (a 1- or 3-channel image output), the output's name decides
(mask / seg / logit / prob -> segmentation; denois / clean / image / recon -> denoising), else
`--task` must. Where two detection layouts fit one shape (a one- or two-class YOLOv5 head
`1 x N x 6|7` is shaped like NMS rows `1 x K x 6|7`), nothing is guessed: `model add` refuses,
naming the layouts, until `--layout` picks one. A shape none of these read is refused with one
line naming the tensor and shape.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import timeit
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.registry import (
    CHANNELS,
    TASKS,
    ModelError,
    ModelInput,
    list_models,
    load_card,
    user_models_dir,
)

TASK_CHOICES = ("auto", *TASKS)
# engines.detection.LAYOUTS (not imported here: `model add --help` need not load OpenCV);
# tests/test_model_add.py checks that the two agree
DETECTION_LAYOUTS = ("yolo_4+C_N", "yolo_N_5+C", "ssd_boxes_scores", "nms_K_6", "nms_K_7", "nms_split")
COLUMNS = {  # what each column of a detection layout's rows holds
    "yolo_4+C_N": ("cx", "cy", "w", "h", "class scores..."),
    "yolo_N_5+C": ("cx", "cy", "w", "h", "objectness", "class scores..."),
    "nms_K_6": ("x1", "y1", "x2", "y2", "score", "class"),
    "nms_K_7": ("batch", "x1", "y1", "x2", "y2", "class", "score"),
    "nms_split": ("x1", "y1", "x2", "y2"),
    "ssd_boxes_scores": ("x1", "y1", "x2", "y2"),
}
UNKNOWN_USE = "unknown: added by the user with `medstream model add`; not validated by medstream"
UNKNOWN_DATA = "unknown: added by the user"
USER_NOTICE = "User model: research use only, not for diagnosis"
NMS_MAX_ROWS = 1000  # a [1, K, 6|7] output with K above this is NMS rows only with --layout
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SEG_HINTS = ("mask", "seg", "logit", "prob", "sigmoid", "label")
_DENOISE_HINTS = ("denois", "clean", "image", "recon", "restor")
_ROLE_HINTS = {  # the role of one of several outputs, by its name (the first that fits)
    "num": ("num",), "boxes": ("box",), "scores": ("score", "conf"), "labels": ("label", "class")
}


@dataclass(frozen=True)
class Tensor:
    """One model output: its name, the shape the graph declares and the shape a run gave."""

    name: str
    declared: tuple[int | str | None, ...]
    shape: tuple[int, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.declared)
        return f"{self.name!r} [{dims}]"


@dataclass(frozen=True)
class Finding:
    """What `inspect` read: task, number of classes, layout and which output plays which role."""

    task: str
    classes: int
    layout: str
    outputs: dict[str, str]  # role -> output name ("output", or boxes / scores / labels ...)
    columns: tuple[str, ...] = ()  # detection rows: what each column holds
    # one-channel segmentation, classification: "probabilities" or "logits"
    sigmoid: str | None = None


def _refuse(t: Tensor, why: str) -> ModelError:
    return ModelError(f"cannot read output {t.describe()}: {why}")


def _image_task(t: Tensor, in_channels: int, task: str) -> str:
    """segmentation or denoising for a 4-D output, by `task`, the channels, else the name."""
    if task in ("segmentation", "denoising"):
        return task
    if task != "auto":
        raise _refuse(t, f"a 4-D image output cannot be a {task} head")
    if t.shape[1] != in_channels:
        return "segmentation"
    name = t.name.lower()
    if any(h in name for h in _SEG_HINTS):
        return "segmentation"
    if any(h in name for h in _DENOISE_HINTS):
        return "denoising"
    raise _refuse(
        t,
        f"{t.shape[1]} channel(s) like the input: segmentation or denoising? "
        "pass --task segmentation or --task denoising",
    )


def _by_role(outs: list[Tensor]) -> dict[str, Tensor]:
    roles: dict[str, Tensor] = {}
    for t in outs:
        name = t.name.lower()
        role = next((r for r, hints in _ROLE_HINTS.items() if any(h in name for h in hints)), None)
        if role is None or role in roles:
            raise _refuse(t, "several outputs, and this one is not boxes, scores, labels or num")
        roles[role] = t
    return roles


def _several(outs: list[Tensor], task: str, layout: str | None) -> Finding:
    if task not in ("auto", "detection"):
        raise _refuse(outs[0], f"{len(outs)} outputs: only a detection model has several")
    roles = _by_role(outs)
    if "boxes" not in roles or "scores" not in roles:
        raise _refuse(outs[0], "several outputs but no pair named boxes and scores")
    boxes, scores = roles["boxes"], roles["scores"]
    if boxes.shape[-1] != 4:
        raise _refuse(boxes, "boxes must end in 4 (x1, y1, x2, y2)")
    names = {r: t.name for r, t in roles.items()}
    found = "nms_split" if "labels" in roles else "ssd_boxes_scores"
    if layout is not None and layout != found:
        raise _refuse(
            boxes, f"--layout {layout} does not fit outputs named {', '.join(names.values())}: "
            f"they read as {found} only"
        )
    if found == "nms_split":  # NMS in the graph: one score and one class per kept box
        return Finding("detection", 0, found, names, COLUMNS[found])
    if len(scores.shape) != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise _refuse(scores, f"SSD scores must be 1 x N x C beside boxes {list(boxes.shape)}")
    return Finding("detection", scores.shape[2], found, names, COLUMNS[found])


def row_layouts(t: Tensor, n_labels: int | None) -> tuple[list[str], list[str]]:
    """The layouts one detection output (`K x 6|7`, or `1 x A x B`) can be read as: (those
    its shape allows, those of them `model add` takes without `--layout`). With `n_labels`,
    a YOLO head must have that many classes. Without `--layout`: without labels the shorter
    axis of a YOLO head is its channels, and NMS rows are at most NMS_MAX_ROWS unless the
    graph leaves their number dynamic."""
    if len(t.shape) == 2:  # K x 6|7 NMS rows (no batch axis)
        rows = [f"nms_K_{t.shape[1]}"]
        return rows, rows
    _, a, b = t.shape
    allowed: list[str] = []
    likely: list[str] = []
    if a > 4 and (n_labels is None or a == 4 + n_labels):
        allowed.append("yolo_4+C_N")
        if n_labels is not None or a < b:
            likely.append("yolo_4+C_N")
    if b > 5 and (n_labels is None or b == 5 + n_labels):
        allowed.append("yolo_N_5+C")
        if n_labels is not None or b <= a:
            likely.append("yolo_N_5+C")
    if b in (6, 7):
        allowed.append(f"nms_K_{b}")
        if isinstance(t.declared[1], str | type(None)) or a <= NMS_MAX_ROWS:
            likely.append(f"nms_K_{b}")
    return allowed, likely


def _describe_layout(layout: str, t: Tensor) -> str:
    """'yolo_N_5+C (a YOLO head with 1 class)' or 'nms_K_6 (NMS rows x1, ...)'."""
    if layout in ("yolo_4+C_N", "yolo_N_5+C"):
        n = t.shape[1] - 4 if layout == "yolo_4+C_N" else t.shape[2] - 5
        return f"{layout} (a YOLO head with {n} class{'es' if n != 1 else ''})"
    return f"{layout} (NMS rows {', '.join(COLUMNS[layout])})"


def _detection_rows(t: Tensor, n_labels: int | None, layout: str | None) -> Finding:
    """A 3-D (or K x 6|7) detection output: YOLO raw heads or NMS rows; `layout`: the user's
    pick (`--layout`), else the one layout the shape fits (several: refused, naming them)."""
    allowed, likely = row_layouts(t, n_labels)
    with_labels = "" if n_labels is None else f" with {n_labels} label{'s' if n_labels != 1 else ''}"
    if layout is not None:
        if layout not in allowed:
            fits = f"it fits {', '.join(allowed)}" if allowed else "it fits no detection layout"
            raise _refuse(t, f"--layout {layout} does not fit this shape{with_labels}; {fits}")
    elif len(likely) > 1:
        named = " or ".join(_describe_layout(x, t) for x in likely)
        picks = " or ".join(f"--layout {x}" for x in likely)
        raise _refuse(t, f"the shape{with_labels} reads as {named}, not guessed: pass {picks}")
    elif likely:
        layout = likely[0]
    else:
        _, a, b = t.shape
        other = f" (--layout {' or --layout '.join(allowed)} reads it)" if allowed else ""
        if n_labels is not None:
            why = f"neither 1 x (4+C) x N nor 1 x N x (5+C) with C = {n_labels} labels"
        elif a < b:
            why = "a YOLO 1 x (4+C) x N head needs C >= 1"
        else:
            why = "a YOLO 1 x N x (5+C) head needs C >= 1"
        raise _refuse(t, why + other)
    classes = {"yolo_4+C_N": t.shape[1] - 4, "yolo_N_5+C": t.shape[-1] - 5}.get(layout, 0)
    return Finding("detection", classes, layout, {"output": t.name}, COLUMNS[layout])


def read_layout(
    outs: list[Tensor],
    in_channels: int,
    task: str = "auto",
    n_labels: int | None = None,
    layout: str | None = None,
) -> Finding:
    """Task, classes and layout from the outputs (shapes of a real run); `layout`: the
    detection layout the user picked (`--layout`, for shapes that fit several); `ModelError`
    if none, or several without `layout`."""
    if task not in TASK_CHOICES:
        raise ModelError(f"--task must be one of {', '.join(TASK_CHOICES)}, got {task!r}")
    if layout is not None:
        if layout not in DETECTION_LAYOUTS:
            raise ModelError(f"--layout must be one of {', '.join(DETECTION_LAYOUTS)}, got {layout!r}")
        if task not in ("auto", "detection"):
            raise ModelError(f"--layout is for detection models, not --task {task}")
        task = "detection"
    if not outs:
        raise ModelError("the model has no outputs")
    if len(outs) > 1:
        return _several(outs, task, layout)
    t = outs[0]
    one = {"output": t.name}
    if len(t.shape) == 4 and t.shape[0] == 1:
        kind = _image_task(t, in_channels, task)
        c = t.shape[1]
        if kind == "denoising":
            if c not in (1, 3):
                raise _refuse(t, f"a denoiser must output 1 or 3 channels, got {c}")
            return Finding("denoising", 0, "NCHW_image", one)
        if c == 1:
            return Finding("segmentation", 2, "NCHW_sigmoid", one)
        return Finding("segmentation", c, "NCHW_classes", one)
    if task in ("segmentation", "denoising"):
        raise _refuse(t, f"a {task} model must output 1 x C x H x W")
    if len(t.shape) == 2 and t.shape[1] in (6, 7) and t.declared[0] != 1 and task != "classification":
        return _detection_rows(t, n_labels, layout)
    if len(t.shape) == 2 and t.shape[0] == 1 and t.shape[1] >= 2 and task != "detection":
        return Finding("classification", t.shape[1], "N_C_logits", one)
    if len(t.shape) == 3 and t.shape[0] == 1 and task in ("auto", "detection"):
        return _detection_rows(t, n_labels, layout)
    raise _refuse(t, "not an image, a 1 x C class vector, nor a detection layout; see --help")


def default_labels(finding: Finding) -> list[str]:
    """Labels when the user gives none: background + classN (segmentation), classN otherwise."""
    if finding.task == "segmentation":
        return ["background"] + [f"class{i}" for i in range(1, finding.classes)]
    return [f"class{i}" for i in range(finding.classes)]


def _input_spec(
    session: Any, channels: str | None, mean: list[float], std: list[float], size: int
) -> tuple[ModelInput, list[str]]:
    inputs = session.get_inputs()
    notes: list[str] = []
    if len(inputs) != 1:
        names = ", ".join(f"{i.name!r} {i.shape}" for i in inputs)
        raise ModelError(f"the model must have one image input, it has {len(inputs)}: {names}")
    arg = inputs[0]
    shape = list(arg.shape)
    dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(arg.type)
    if len(shape) != 4 or dtype is None:
        raise ModelError(
            f"cannot read input {arg.name!r} {shape} {arg.type}: expected a float N x C x H x W"
        )
    c = shape[1]
    if not isinstance(c, int) or c not in (1, 3):
        raise ModelError(f"cannot read input {arg.name!r} {shape}: channels must be 1 or 3")
    if channels is None:
        channels = "gray" if c == 1 else "rgb"
    if CHANNELS.get(channels) != c:
        raise ModelError(f"--channels {channels} does not fit input {arg.name!r} {shape}")
    hw: list[int] = []
    for d, axis in zip(shape[2:], ("height", "width"), strict=True):
        if isinstance(d, int) and d > 0:
            hw.append(d)
        else:
            hw.append(size)
            notes.append(f"input {axis} is dynamic ({d}): {size} used (--size)")
    if len(mean) == 1:
        mean = mean * c
    if len(std) == 1:
        std = std * c
    finite = all(math.isfinite(v) for v in (*mean, *std))
    if len(mean) != c or len(std) != c or not finite or any(s <= 0 for s in std):
        counts = "1 value each" if c == 1 else f"1 or {c} values each"
        raise ModelError(f"--mean and --std need {counts}, finite, std > 0; got {mean}, {std}")
    spec = ModelInput(arg.name, channels, hw[0], hw[1], dtype, tuple(mean), tuple(std))
    return spec, notes


def synthetic_frame(height: int, width: int) -> np.ndarray:
    """A grey uint8 test frame: a gradient, a bright disc and seeded noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    img = 60.0 + 100.0 * xx / max(width - 1, 1)
    img[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 4) ** 2] = 220.0
    img += rng.normal(0.0, 12.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class AddResult:
    """What `add_model` wrote and found."""

    name: str
    folder: Path
    card: dict[str, Any]
    finding: Finding
    ms_per_frame: float
    notes: list[str]


def _labels(labels: str | None, labels_file: str | None) -> list[str] | None:
    if labels is not None and labels_file is not None:
        raise ModelError("give --labels or --labels-file, not both")
    if labels_file is not None:
        try:
            lines = Path(labels_file).read_text().splitlines()
        except OSError as e:
            raise ModelError(f"cannot read --labels-file {labels_file}: {e.strerror}") from None
        return [x.strip() for x in lines if x.strip()]
    if labels is not None:
        return [x.strip() for x in labels.split(",") if x.strip()]
    return None


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ModelError(f"model name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
    if name in list_models() or name.startswith("classical-"):
        raise ModelError(f"model name {name!r} is bundled with medstream: choose another --name")


def add_model(
    onnx_file: str,
    name: str | None = None,
    task: str = "auto",
    labels: str | None = None,
    labels_file: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    channels: str | None = None,
    size: int = 256,
    force: bool = False,
    layout: str | None = None,
) -> AddResult:
    """Inspect `onnx_file`, run it once, write model.onnx + card.json under the user folder;
    `layout`: the detection layout, where the output's shape fits several."""
    import onnxruntime as ort

    from engines.preprocess import preprocess

    src = Path(onnx_file).expanduser()
    if not src.is_file():
        raise ModelError(f"model file {str(src)!r} does not exist")
    name = name or src.stem
    _check_name(name)
    folder = user_models_dir() / name
    if folder.exists() and not force:
        raise ModelError(f"user model {name!r} exists in {folder}: --force replaces it")
    given = _labels(labels, labels_file)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own types for a broken or unsupported file
        raise ModelError(f"ONNX Runtime cannot load {str(src)!r}: {str(e).splitlines()[0]}") from None
    spec, notes = _input_spec(session, channels, mean or [0.0], std or [1.0], size)
    x = preprocess(synthetic_frame(spec.height, spec.width), "gray8", spec)
    try:
        values = session.run(None, {spec.name: x})
        times = timeit.repeat(lambda: session.run(None, {spec.name: x}), number=1, repeat=3)
    except Exception as e:
        raise ModelError(f"the model failed on a {spec.height}x{spec.width} frame: {str(e).splitlines()[0]}") from None
    outs = [
        Tensor(o.name, tuple(d if isinstance(d, int) else (d or None) for d in o.shape), v.shape)
        for o, v in zip(session.get_outputs(), values, strict=True)
    ]
    finding = read_layout(outs, spec.num_channels, task, None if given is None else len(given), layout)
    if finding.layout == "NCHW_sigmoid":
        p = np.asarray(values[0])
        kind = "probabilities" if float(p.min()) >= 0.0 and float(p.max()) <= 1.0 else "logits"
        finding = replace(finding, sigmoid=kind)
    if finding.task == "classification":  # probabilities: non-negative, summing to 1
        p = np.asarray(values[0], np.float64)
        probs = float(p.min()) >= 0.0 and abs(float(p.sum()) - 1.0) < 1e-3
        finding = replace(finding, sigmoid="probabilities" if probs else "logits")
    label_list = given if given is not None else default_labels(finding)
    if finding.task == "denoising":
        label_list = []
    elif finding.classes and len(label_list) != finding.classes:
        raise ModelError(
            f"{len(label_list)} labels given but the model has {finding.classes} classes "
            f"(layout {finding.layout})"
        )
    elif not label_list:
        raise ModelError(f"layout {finding.layout} does not say how many classes: give --labels")
    card = _card(name, src, spec, finding, label_list, 1e3 * float(np.median(times)))
    _install(src, card, folder)
    return AddResult(name, folder, card, finding, card["cost"]["latency_ms"]["engine_median_ms"], notes)


def _install(src: Path, card: dict[str, Any], folder: Path) -> None:
    """Put model.onnx and card.json in `folder` (replacing it) only once the card reads back
    as the registry will read it: a failed add leaves nothing behind, nor a half-written model."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.adding-{os.getpid()}"  # made as the umask says
    shutil.rmtree(staging, ignore_errors=True)  # left by a process of this pid that was killed
    staging.mkdir()
    try:
        shutil.copyfile(src, staging / "model.onnx")
        (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        load_card(staging / "card.json")
        if folder.exists():  # --force
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _card(
    name: str, src: Path, spec: ModelInput, finding: Finding, labels: list[str], ms: float
) -> dict[str, Any]:
    output: dict[str, Any] = {
        "name": finding.outputs.get("output", finding.outputs.get("boxes", "")),
        "layout": finding.layout,
        "outputs": finding.outputs,
    }
    if finding.columns:
        output["columns"] = list(finding.columns)
    if finding.sigmoid and finding.task == "segmentation":
        output["sigmoid"] = finding.sigmoid
    if finding.task == "classification":
        output["scores"] = finding.sigmoid or "logits"
    if finding.task == "denoising":
        output["scale"] = 255.0
        output["postprocess"] = "pixel = 255 x value (the output read as pixel / 255)"
    return {
        "name": name,
        "task": finding.task,
        "description": f"user model added from {src.name} with `medstream model add`",
        "source": "user",
        "labels": labels,
        "input": {
            "name": spec.name,
            "layout": "NCHW",
            "dtype": spec.dtype,
            "channels": spec.channels,
            "height": spec.height,
            "width": spec.width,
            **({"fit": "letterbox", "pad_value": 114} if finding.task == "detection" else {}),
        },
        "normalization": {
            "mean": list(spec.mean),
            "std": list(spec.std),
            "applied_to": "pixel / 255",
        },
        "output": output,
        "cost": {
            "latency_ms": {"engine_median_ms": round(ms, 3), "runs": 3},
            "latency_setup": "ONNX Runtime CPU, 1 thread, synthetic frame, at `model add`",
        },
        "intended_use": UNKNOWN_USE,
        "training_data": UNKNOWN_DATA,
        "notice": USER_NOTICE,
    }
