"""Model registry: bundled models (`engines/models/<name>/`) and their cards.

A model is an ONNX file with a `card.json` beside it. The card says what the pipeline needs to
feed and read the model (task, input name, size, channels, dtype, normalisation; output name,
scale; labels) and what is known about it (training data, metrics, cost). A card may name a
TorchScript file of the same network (`"torchscript": "model.pt"`) for the PyTorch backend.
Optional, shown to the user and used at run time: `intended_use`, `training_data`, `notice`
(strings), `confidence_threshold` (segmentation: softmax margin below which a pixel is sent as
background) and `applicability` (the out-of-distribution gate: engines/applicability.py).
`EngineSpec.model` is a bundled name, a user model's name (a folder under `user_models_dir()`,
written by `medstream model add`: engines/model_add.py) or a path to an .onnx file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"
USER_MODELS_ENV = "MEDSTREAM_MODELS"  # overrides the user models folder
USER_MODELS_DEFAULT = "~/.local/share/medstream/models"
CHANNELS = {"gray": 1, "rgb": 3, "bgr": 3}
DTYPES = ("float32", "float16")
# segmentation: labels map; denoising: an output image; detection: boxes (engines/detection.py);
# classification: top-k labels (engines/classification.py)
TASKS = ("segmentation", "denoising", "detection", "classification")
RUNNABLE_TASKS = ("segmentation", "denoising", "detection", "classification")
FITS = ("stretch", "letterbox")  # input.fit; letterbox pads with input.pad_value
PRECISIONS = ("fp32", "fp16", "int8")
MAX_INFO_CHARS = 400  # intended_use, training_data, notice: they travel with every frame


class ModelError(ValueError):
    """A model that cannot be found, or whose card is missing or malformed."""


@dataclass(frozen=True)
class ModelInput:
    """How to feed a model: one NCHW tensor `name` of `dtype`, `channels` at height x width.

    The pipeline computes `(pixel / 255 - mean[c]) / std[c]` per channel (see preprocess.py).
    """

    name: str
    channels: str  # "gray", "rgb" or "bgr": the channel order the model expects
    height: int
    width: int
    dtype: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_channels(self) -> int:
        return CHANNELS[self.channels]


@dataclass(frozen=True)
class ModelCard:
    """The parts of a card.json the pipeline relies on; `raw` keeps all of it."""

    name: str
    task: str
    labels: tuple[str, ...]  # segmentation: one name per label value; empty for denoising
    input: ModelInput
    output: str
    raw: dict[str, Any]
    output_scale: float = 1.0  # denoising: pixel = output x scale
    precision: str = "fp32"  # the arithmetic the ONNX file asks for: fp32, fp16, int8 (Q/DQ)
    torchscript: str | None = None  # file name of the TorchScript artefact, beside the ONNX
    # segmentation: pixels whose softmax margin is below this are sent as background (label 0)
    confidence_threshold: float = 0.0
    intended_use: str = ""  # shown to the user (viewer), with the training data and notice
    training_data: str = ""
    notice: str = ""  # e.g. "Research use only, not for diagnosis": on screen wherever shown
    # how a frame is fitted to the input: "stretch" (resize) or "letterbox" (keep the aspect,
    # pad with pad_value; engines/letterbox.py); detection cards default to letterbox
    fit: str = "stretch"
    pad_value: int = 114

    @property
    def info(self) -> dict[str, str]:
        """What the user is told about the model: intended use, training data, notice."""
        return {
            "intended_use": self.intended_use,
            "training_data": self.training_data,
            "notice": self.notice,
        }


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: its id (bundled name or file path), ONNX file and card."""

    model_id: str
    onnx_path: Path
    card: ModelCard

    @property
    def torchscript_path(self) -> Path | None:
        """The TorchScript file named by the card, or None if it ships none."""
        if self.card.torchscript is None:
            return None
        return self.onnx_path.with_name(self.card.torchscript)


def _get(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(raw, dict) or key not in raw:
        raise ModelError(f"{where}: missing key {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ModelError(f"{where}.{key}: unexpected value {value!r:.60}")
    return value


def _floats(raw: dict[str, Any], key: str, n: int, where: str) -> tuple[float, ...]:
    values = _get(raw, key, list, where)
    if len(values) != n or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise ModelError(f"{where}.{key}: expected {n} numbers, got {values!r:.60}")
    return tuple(float(v) for v in values)


def load_card(path: Path) -> ModelCard:
    """Read and check a card.json; errors name the file and the key."""
    where = str(path)
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelError(f"{where}: model card not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{where}: cannot read model card: {e}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: a model card must be a JSON object")
    inp = _get(raw, "input", dict, where)
    channels = _get(inp, "channels", str, f"{where}: input")
    if channels not in CHANNELS:
        raise ModelError(
            f"{where}: input.channels must be one of {', '.join(CHANNELS)}, got {channels!r}"
        )
    dtype = _get(inp, "dtype", str, f"{where}: input")
    if dtype not in DTYPES:
        raise ModelError(f"{where}: input.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    layout = _get(inp, "layout", str, f"{where}: input")
    if layout != "NCHW":
        raise ModelError(f"{where}: input.layout must be 'NCHW', got {layout!r}")
    height, width = (
        _get(inp, "height", int, f"{where}: input"),
        _get(inp, "width", int, f"{where}: input"),
    )
    if height <= 0 or width <= 0:
        raise ModelError(f"{where}: input size must be positive, got {height}x{width}")
    norm = _get(raw, "normalization", dict, where)
    n = CHANNELS[channels]
    std = _floats(norm, "std", n, f"{where}: normalization")
    if any(s <= 0 for s in std):
        raise ModelError(f"{where}: normalization.std must be > 0, got {list(std)}")
    task = _get(raw, "task", str, where)
    if task not in TASKS:
        raise ModelError(f"{where}: task must be one of {', '.join(TASKS)}, got {task!r}")
    labels = _get(raw, "labels", list, where)
    if not all(isinstance(x, str) for x in labels) or len(labels) > 256:
        raise ModelError(f"{where}: labels must be a list of at most 256 strings")
    if task in ("segmentation", "detection", "classification") and not labels:
        raise ModelError(f"{where}: a {task} model needs labels (one per class)")
    out = _get(raw, "output", dict, where)
    scale = out.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ModelError(f"{where}: output.scale must be a number > 0, got {scale!r:.40}")
    precision = raw.get("precision", {"float32": "fp32", "float16": "fp16"}[dtype])
    if precision not in PRECISIONS:
        raise ModelError(f"{where}: precision must be one of {', '.join(PRECISIONS)}")
    torchscript = raw.get("torchscript")
    if torchscript is not None and (
        not isinstance(torchscript, str) or "/" in torchscript or "\\" in torchscript
    ):
        raise ModelError(f"{where}: torchscript must be a file name beside the model")
    threshold = raw.get("confidence_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
        0.0 <= threshold < 1.0
    ):
        raise ModelError(f"{where}: confidence_threshold must be a number in [0, 1), got {threshold!r:.40}")
    fit = inp.get("fit", "letterbox" if task == "detection" else "stretch")
    if fit not in FITS:
        raise ModelError(f"{where}: input.fit must be one of {', '.join(FITS)}, got {fit!r:.40}")
    pad_value = inp.get("pad_value", 114)
    if isinstance(pad_value, bool) or not isinstance(pad_value, int) or not 0 <= pad_value <= 255:
        raise ModelError(f"{where}: input.pad_value must be an integer in 0..255, got {pad_value!r:.40}")
    texts: dict[str, str] = {}
    for key in ("intended_use", "training_data", "notice"):
        value = raw.get(key, "")
        if not isinstance(value, str) or len(value) > MAX_INFO_CHARS:
            raise ModelError(f"{where}: {key} must be a string of at most {MAX_INFO_CHARS} characters")
        texts[key] = value
    if "applicability" in raw:
        from engines.applicability import Gate

        try:
            Gate.from_card(raw["applicability"], where)
        except ValueError as e:
            raise ModelError(str(e)) from None
    return ModelCard(
        name=_get(raw, "name", str, where),
        task=task,
        labels=tuple(labels),
        input=ModelInput(
            name=_get(inp, "name", str, f"{where}: input"),
            channels=channels,
            height=height,
            width=width,
            dtype=dtype,
            mean=_floats(norm, "mean", n, f"{where}: normalization"),
            std=std,
        ),
        output=_get(out, "name", str, f"{where}: output"),
        raw=raw,
        output_scale=float(scale),
        precision=precision,
        torchscript=torchscript,
        confidence_threshold=float(threshold),
        intended_use=texts["intended_use"],
        training_data=texts["training_data"],
        notice=texts["notice"],
        fit=fit,
        pad_value=pad_value,
    )


def user_models_dir() -> Path:
    """The user models folder: `$MEDSTREAM_MODELS`, else ~/.local/share/medstream/models."""
    return Path(os.environ.get(USER_MODELS_ENV) or USER_MODELS_DEFAULT).expanduser()


def _model_folders(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if (d / "model.onnx").is_file() and (d / "card.json").is_file()
    )


def list_models() -> list[str]:
    """Names of the bundled models (folders under engines/models with model.onnx and card.json)."""
    return _model_folders(MODELS_DIR)


def list_user_models() -> list[str]:
    """Names of the user models (`medstream model add`); a bundled name is never one of them."""
    bundled = set(list_models())
    return [n for n in _model_folders(user_models_dir()) if n not in bundled]


def check_runnable(ref: ModelRef) -> None:
    """Raise `ModelError` (one line) if the pipeline cannot postprocess the model: a task it
    has no postprocess for, or a detection / classification card whose output it cannot read."""
    task = ref.card.task
    if task not in RUNNABLE_TASKS:
        raise ModelError(
            f"model {ref.model_id!r} is a {task} model: its postprocess is not built yet "
            f"(only {', '.join(RUNNABLE_TASKS)} models run in a pipeline today)"
        )
    where = f"model {ref.model_id!r}"
    try:
        if task == "detection":
            from engines.detection import DetectionDecoder

            card = ref.card
            DetectionDecoder.from_card(
                card.raw["output"], len(card.labels), card.input.height, card.input.width, where
            )
        elif task == "classification":
            from engines.classification import scores_kind

            scores_kind(ref.card.raw["output"], where)
    except ValueError as e:
        raise ModelError(str(e)) from None


def resolve_model(model: str) -> ModelRef:
    """A bundled model name, a user model name (bundled names win), or a path to an .onnx file
    with a card.json in the same folder."""
    if not isinstance(model, str) or not model:
        raise ModelError(f"model must be a bundled name or an .onnx path, got {model!r:.60}")
    bundled = list_models()
    if model in bundled:
        folder = MODELS_DIR / model
        return ModelRef(model, folder / "model.onnx", load_card(folder / "card.json"))
    looks_like_path = model.endswith(".onnx") or "/" in model or "\\" in model
    if not looks_like_path:
        user = list_user_models()
        if model in user:
            folder = user_models_dir() / model
            return ModelRef(model, folder / "model.onnx", load_card(folder / "card.json"))
        names = ", ".join(bundled) or "(none)"
        users = ", ".join(user) or "(none)"
        raise ModelError(
            f"unknown model {model!r}: not a bundled model (bundled: {names}), nor a user model "
            f"in {user_models_dir()} ({users}), nor an .onnx path"
        )
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist")
    card = path.with_name("card.json")
    if not card.is_file():
        raise ModelError(
            f"model {str(path)!r} has no card.json beside it: the pipeline needs its input size, "
            "channels, normalisation and labels (see engines/models/us-seg/card.json)"
        )
    return ModelRef(str(path), path, load_card(card))
