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
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec

from engines.schema import typed

if TYPE_CHECKING:
    from engines.detection import DetectionDecoder

MODELS_DIR = Path(__file__).resolve().parent / "models"
USER_MODELS_ENV = "MEDSTREAM_MODELS"  # overrides the user models folder
USER_MODELS_DEFAULT = "~/.local/share/medstream/models"
CHANNELS = {"gray": 1, "rgb": 3, "bgr": 3}
# segmentation: labels map; denoising: an output image; detection: boxes (engines/detection.py);
# classification: top-k labels (engines/classification.py)
Task = Literal["segmentation", "denoising", "detection", "classification"]
TASKS: tuple[str, ...] = get_args(Task)
Fit = Literal["stretch", "letterbox"]  # input.fit; letterbox pads with input.pad_value
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


class CardInput(msgspec.Struct):
    name: str
    channels: Literal["gray", "rgb", "bgr"]
    height: Annotated[int, msgspec.Meta(gt=0)]
    width: Annotated[int, msgspec.Meta(gt=0)]
    dtype: Literal["float32", "float16"]
    layout: Literal["NCHW"]
    fit: Fit | None = None  # default: letterbox for detection, stretch otherwise
    pad_value: Annotated[int, msgspec.Meta(ge=0, le=255)] = 114


class CardNormalization(msgspec.Struct):
    mean: list[float]
    std: list[Annotated[float, msgspec.Meta(gt=0)]]


class CardOutput(msgspec.Struct):
    name: str
    scale: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # denoising: pixel = output x scale


InfoText = Annotated[str, msgspec.Meta(max_length=MAX_INFO_CHARS)]


class CardSchema(msgspec.Struct):
    """What a card.json must hold (every card rule is here); other keys are kept in `raw`."""

    name: str
    task: Task
    labels: Annotated[list[str], msgspec.Meta(max_length=256)]
    input: CardInput
    normalization: CardNormalization
    output: CardOutput
    precision: Literal["fp32", "fp16", "int8"] | None = None  # default: from input.dtype
    torchscript: str | None = None
    confidence_threshold: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.0
    intended_use: InfoText = ""
    training_data: InfoText = ""
    notice: InfoText = ""

    def __post_init__(self) -> None:
        n = CHANNELS[self.input.channels]
        for key in ("mean", "std"):
            if len(getattr(self.normalization, key)) != n:
                raise ValueError(f"normalization.{key}: expected one number per channel ({n})")
        if self.task in ("segmentation", "detection", "classification") and not self.labels:
            raise ValueError(f"a {self.task} model needs labels (one per class)")
        if self.torchscript is not None and ("/" in self.torchscript or "\\" in self.torchscript):
            raise ValueError("torchscript must be a file name beside the model")


def load_card(path: Path) -> ModelCard:
    """Read and check a card.json (`CardSchema`); errors name the file and the key."""
    where = str(path)
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelError(f"{where}: model card not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{where}: cannot read model card: {e}") from None
    card = typed(raw, CardSchema, where, ModelError)
    if "applicability" in raw:
        from engines.applicability import Gate

        try:
            Gate.from_card(raw["applicability"], where)
        except ValueError as e:
            raise ModelError(str(e)) from None
    inp, norm = card.input, card.normalization
    return ModelCard(
        name=card.name,
        task=card.task,
        labels=tuple(card.labels),
        input=ModelInput(
            inp.name, inp.channels, inp.height, inp.width, inp.dtype, tuple(norm.mean), tuple(norm.std)
        ),
        output=card.output.name,
        raw=raw,
        output_scale=card.output.scale,
        precision=card.precision or {"float32": "fp32", "float16": "fp16"}[inp.dtype],
        torchscript=card.torchscript,
        confidence_threshold=card.confidence_threshold,
        intended_use=card.intended_use,
        training_data=card.training_data,
        notice=card.notice,
        fit=inp.fit or ("letterbox" if card.task == "detection" else "stretch"),
        pad_value=inp.pad_value,
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
        if not d.name.startswith(".")  # a model being added (engines/model_add.py)
        and (d / "model.onnx").is_file()
        and (d / "card.json").is_file()
    )


def list_models() -> list[str]:
    """Names of the bundled models (folders under engines/models with model.onnx and card.json)."""
    return _model_folders(MODELS_DIR)


def list_user_models() -> list[str]:
    """Names of the user models (`medstream model add`); a bundled name is never one of them."""
    bundled = set(list_models())
    return [n for n in _model_folders(user_models_dir()) if n not in bundled]


def check_runnable(ref: ModelRef) -> DetectionDecoder | str | None:
    """Raise `ModelError` (one line) if the pipeline cannot postprocess the model: a detection
    / classification card whose output it cannot read (every task in TASKS has a postprocess;
    `load_card` refuses any other). Returns how the postprocess reads the output: a detection
    card's decoder, a classification card's scores kind, else None."""
    card = ref.card
    where = f"model {ref.model_id!r}"
    try:
        if card.task == "detection":
            from engines.detection import DetectionDecoder

            return DetectionDecoder.from_card(
                card.raw["output"], len(card.labels), card.input.height, card.input.width, where
            )
        if card.task == "classification":
            from engines.classification import scores_kind

            return scores_kind(card.raw["output"], where)
    except ValueError as e:
        raise ModelError(str(e)) from None
    return None


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
