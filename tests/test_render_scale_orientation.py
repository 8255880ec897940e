"""Scale bar (mm from pixel spacing) and orientation letters: sizes true to the spacing, drawn on
a copy by annotate(), in place by draw()."""

from __future__ import annotations

import numpy as np
import pytest

from stream.render import OrientationAnnotator, ScaleBarAnnotator
from stream.render.scale import format_mm, nice_length


@pytest.mark.parametrize(
    "max_mm, want", [(51.2, 50), (19.9, 10), (20, 20), (7.3, 5), (0.26, 0.2), (1.0, 1.0), (0, None)]
)
def test_nice_length(max_mm, want) -> None:
    got = nice_length(max_mm)
    assert got == pytest.approx(want) if want is not None else got is None


def test_format_mm() -> None:
    assert format_mm(50) == "50 mm" and format_mm(100) == "10 cm" and format_mm(0.5) == "0.5 mm"


def white_runs(canvas: np.ndarray) -> tuple[int, int]:
    """Length of the longest white run along the bottom-most white row and right-most column."""
    white = (canvas == 255).all(axis=2)
    rows = np.where(white.any(axis=1))[0]
    cols = np.where(white.any(axis=0))[0]
    return int(white[rows.max()].sum()), int(white[:, cols.max()].sum())


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.3, 0.6), (0.0625, 0.0625)])
def test_scale_bar_arms_are_true_to_the_spacing(spacing: tuple[float, float]) -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    annotator = ScaleBarAnnotator()
    out = annotator.annotate(image, spacing)
    assert not image.any()  # annotate never draws on its input
    lay = annotator.layout(480, 640, spacing)
    assert lay is not None
    row_mm, col_mm = spacing
    assert lay.length_x == round(lay.mm / col_mm) <= 640 * 0.2
    assert lay.length_y == round(lay.mm / row_mm)
    horizontal, vertical = white_runs(out)
    assert horizontal == lay.length_x and vertical == lay.length_y
    assert lay.text in ("50 mm", "20 mm", "5 mm", "10 mm")


def test_scale_bar_is_skipped_when_it_cannot_fit() -> None:
    canvas = np.zeros((40, 40, 3), np.uint8)
    ScaleBarAnnotator().draw(canvas, (0.01, 100.0))  # one arm would be far taller than the image
    assert not canvas.any()


def test_orientation_letters_at_the_edges() -> None:
    annotator = OrientationAnnotator()
    lay = annotator.layout(400, 600, ("L", "P"))
    where = {text: origin for text, origin in lay.labels}
    assert set(where) == {"R", "L", "A", "P"}
    assert where["R"][0] < 50 and where["L"][0] > 550  # R left, L right
    assert where["A"][1] < 50 and where["P"][1] > 350  # A top, P bottom
    image = np.zeros((400, 600, 3), np.uint8)
    out = annotator.annotate(image, ("L", "P"))
    assert not image.any() and out[:, :60].any() and out[:, -60:].any()
    canvas = np.zeros((400, 600, 3), np.uint8)
    annotator.draw(canvas, ("L", "P"))
    assert np.array_equal(canvas, out)
