"""The docs match the code."""

from __future__ import annotations

import re
from pathlib import Path

from tools.config_reference import main as config_reference


def test_config_reference_is_current() -> None:
    assert config_reference(["--check"]) == 0, "run: python -m tools.config_reference"


ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
ROOMS = ("stream/", "engines/", "tools/", "configs/", "tests/", "docs/")


def named_paths(text: str) -> set[str]:
    """Every `path` in backticks that starts with one of the project's rooms."""
    return {p for p in re.findall(r"`([^`\s]+)`", text) if p.startswith(ROOMS)}


def test_architecture_names_only_files_that_exist() -> None:
    paths = named_paths(ARCHITECTURE.read_text())
    assert len(paths) >= 40, sorted(paths)  # the page walks the code by file name
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_named_paths_finds_paths_and_only_paths() -> None:
    text = "`stream/x.py`, `engines/`, `medstream run`, `tools/a/b.py` and `live`"
    assert named_paths(text) == {"stream/x.py", "engines/", "tools/a/b.py"}


def test_readme_links_the_architecture_page() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
