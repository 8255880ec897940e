"""Optional dependencies: which extra brings a module, and one clear line when it is missing."""

from __future__ import annotations

import importlib

from tools.errors import ToolError

# top-level module -> the extra of pyproject.toml that installs it
EXTRA_OF: dict[str, str] = {
    "psutil": "profile",
    "matplotlib": "profile",
    "torch": "train",
    "onnx": "train",
    "pydicom": "dicom",
    "PIL": "dicom",
    "pyigtl": "igtl",
    "prometheus_client": "prometheus",
    "tensorrt": "gpu",
    "pycuda": "gpu",
}


class MissingExtra(ToolError):
    """A command needs a module that the base install does not bring; the message says which
    extra to install."""


def missing_message(command: str, module: str) -> str:
    """One line: what `command` needs and the pip command that installs it."""
    top = module.split(".")[0]
    extra = EXTRA_OF.get(top)
    how = f"pip install 'medstream[{extra}]'" if extra else f"pip install {top}"
    return f"medstream {command} needs {top}, which the base install does not include: {how}"


def require(command: str, *modules: str, hint: str = "") -> None:
    """Raise MissingExtra (one line naming the extra, then `hint`) unless every module imports."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            text = missing_message(command, module)
            raise MissingExtra(f"{text}; {hint}" if hint else text) from e


def missing_extra_of(error: ImportError) -> str | None:
    """The top-level module an ImportError is about, when an extra brings it; else None."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    return name if name in EXTRA_OF else None
