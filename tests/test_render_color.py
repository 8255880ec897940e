"""to_bgr conversions and the default palette."""

from __future__ import annotations

import numpy as np
import pytest

from stream.render.color import DEFAULT_PALETTE, check_palette, label_color, to_bgr


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def test_gray8_becomes_three_equal_channels_in_a_new_array():
    gray = _readonly(np.arange(12, dtype=np.uint8).reshape(3, 4))
    out = to_bgr(gray, "gray8")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert out.flags.writeable and not np.shares_memory(out, gray)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_gray8_hxwx1_is_accepted():
    gray = np.full((2, 2, 1), 7, dtype=np.uint8)
    assert to_bgr(gray, "gray8").shape == (2, 2, 3)


def test_rgb8_swaps_channels_and_bgr8_copies():
    rgb = _readonly(np.array([[[10, 20, 30]]], dtype=np.uint8))
    np.testing.assert_array_equal(to_bgr(rgb, "rgb8"), [[[30, 20, 10]]])
    bgr = _readonly(np.zeros((4, 6, 3), dtype=np.uint8)[:, ::2])  # a strided, read-only view
    out = to_bgr(bgr, "bgr8")
    assert out.flags.c_contiguous and out.flags.writeable and not np.shares_memory(out, bgr)
    np.testing.assert_array_equal(out, bgr)


@pytest.mark.parametrize("fmt", ["gray16", "float32", "yuv420", ""])
def test_unsupported_formats_are_a_clear_error(fmt):
    with pytest.raises(ValueError, match="cannot render pixel format"):
        to_bgr(np.zeros((2, 2), np.uint8), fmt)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (np.zeros((2, 2, 3), np.uint8), "gray8"),
        (np.zeros((2, 2), np.uint8), "bgr8"),
        (np.zeros((2, 2, 4), np.uint8), "rgb8"),
        (np.zeros((2, 2, 3), np.uint16), "bgr8"),
    ],
)
def test_wrong_shape_or_dtype_is_a_clear_error(image, fmt):
    with pytest.raises(ValueError, match=fmt):
        to_bgr(image, fmt)


def test_default_palette_is_distinct_and_valid():
    assert len(set(DEFAULT_PALETTE)) == len(DEFAULT_PALETTE) >= 10
    assert check_palette(None) is DEFAULT_PALETTE
    assert label_color(DEFAULT_PALETTE, len(DEFAULT_PALETTE) + 1) == DEFAULT_PALETTE[1]


def test_bad_palette_is_a_clear_error():
    with pytest.raises(ValueError, match=r"colors\[1\]"):
        check_palette([(0, 0, 0), (0, 300, 0)])
    with pytest.raises(ValueError, match="at least one"):
        check_palette([])
