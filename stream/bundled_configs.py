"""The ready pipelines of `configs/`, found in a source tree and in an installed package alike.

The top-level `configs/` folder is installed as the data package `medstream_configs` (see
setup.py); a source tree run without installing uses the folder itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "medstream_configs"
SOURCE_DIR = Path(__file__).resolve().parent.parent / "configs"


def configs_dir() -> Path:
    """The folder of the bundled configs: the installed data package, else the source tree's."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location).is_dir():
            return Path(location)
    return SOURCE_DIR


def bundled_config(name: str) -> Path:
    """The path of one bundled config, e.g. `bundled_config("ultrasound_seg.yaml")`."""
    return configs_dir() / name


def resolve_config(path: str | Path) -> Path:
    """`path` as given when it exists; `configs/NAME.yaml` that does not exist here (an
    installed package, another working directory) is the bundled config of that name."""
    p = Path(path)
    if p.exists() or p.parent != Path("configs"):
        return p
    bundled = bundled_config(p.name)
    return bundled if bundled.is_file() else p
