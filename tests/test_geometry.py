"""Pixel spacing and patient orientation in frame meta: validation and the opposite direction."""

from __future__ import annotations

import math

import pytest

from stream.geometry import (
    check_orientation,
    check_spacing,
    geometry_meta,
    opposite,
    orientation_from_meta,
    spacing_from_meta,
)


def test_spacing_and_orientation_round_trip_through_meta() -> None:
    meta = geometry_meta([0.5, 0.25], ["l", "P"])
    assert meta == {"pixel_spacing_mm": [0.5, 0.25], "patient_orientation": ["L", "P"]}
    assert spacing_from_meta(meta) == (0.5, 0.25)
    assert orientation_from_meta(meta) == ("L", "P")
    assert spacing_from_meta({}) is None and orientation_from_meta({}) is None


@pytest.mark.parametrize(
    "value", [[0.5], [0, 1], [-1, 1], [math.nan, 1], [1, math.inf], "0.5", [True, 1], [1, 2000]]
)
def test_bad_spacing_is_a_one_line_value_error(value) -> None:
    with pytest.raises(ValueError, match=r"^pixel_spacing_mm must be \[row_mm, col_mm\]"):
        check_spacing(value)


@pytest.mark.parametrize("value", [["L"], ["L", "X"], ["", "P"], ["LPHF", "A"], "LP", [1, 2]])
def test_bad_orientation_is_a_one_line_value_error(value) -> None:
    with pytest.raises(ValueError, match="^patient_orientation must be two directions"):
        check_orientation(value)


def test_opposite_directions() -> None:
    assert opposite("L") == "R" and opposite("a") == "P" and opposite("HFL") == "FHR"
