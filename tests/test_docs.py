"""The docs match the code."""

from __future__ import annotations

from tools.config_reference import main as config_reference


def test_config_reference_is_current() -> None:
    assert config_reference(["--check"]) == 0, "run: python -m tools.config_reference"
