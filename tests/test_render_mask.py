"""MaskAnnotator: colour exactly where the mask is, input untouched, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream.render import MaskAnnotator

H, W = 120, 160
RED, GREEN = (0, 0, 255), (0, 255, 0)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (50, 60), 25, 1, -1)
    cv2.rectangle(mask, (100, 20), (140, 90), 2, -1)
    return image, mask


def _blend(image: np.ndarray, color: tuple[int, int, int], opacity: float) -> np.ndarray:
    expected = image.astype(np.float64) * (1 - opacity) + np.array(color) * opacity
    return np.clip(np.round(expected), 0, 255).astype(np.uint8)


def test_input_is_never_modified_even_when_read_only():
    image, mask = _scene()
    before = image.copy()
    image.flags.writeable = False
    mask.flags.writeable = False
    out = MaskAnnotator().annotate(image, mask)
    np.testing.assert_array_equal(image, before)
    assert not np.shares_memory(out, image)
    assert out.flags.writeable and not np.array_equal(out, before)


def test_fill_colour_exactly_inside_and_nothing_outside():
    image, mask = _scene()
    out = MaskAnnotator(colors=[(0, 0, 0), RED, GREEN], opacity=0.5).annotate(image, mask)
    outside = mask == 0
    np.testing.assert_array_equal(out[outside], image[outside])  # thickness-1 contours lie inside
    kernel = np.ones((3, 3), np.uint8)
    for label, color in ((1, RED), (2, GREEN)):
        interior = cv2.erode((mask == label).astype(np.uint8), kernel).astype(bool)
        assert interior.sum() > 100
        diff = np.abs(out[interior].astype(int) - _blend(image, color, 0.5)[interior].astype(int))
        assert diff.max() <= 1
        # Border pixels carry the contour (solid colour) or, where the 8-connected contour
        # cuts a corner, the fill; nothing else.
        edge = (mask == label) & ~interior
        solid = np.all(out[edge] == color, axis=1)
        filled = np.abs(out[edge].astype(int) - _blend(image, color, 0.5)[edge]).max(axis=1) <= 1
        assert np.all(solid | filled)
        assert solid.mean() > 0.7


def test_no_contour_and_full_opacity_paints_solid_label_colour():
    image, mask = _scene()
    out = MaskAnnotator(colors=[(0, 0, 0), RED, GREEN], opacity=1.0, contour_thickness=0).annotate(
        image, mask
    )
    np.testing.assert_array_equal(out[mask == 1], np.broadcast_to(RED, out[mask == 1].shape))
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])


def test_skip_labels_leaves_those_pixels_alone():
    image, mask = _scene()
    out = MaskAnnotator(skip_labels=(0, 2)).annotate(image, mask)
    np.testing.assert_array_equal(out[mask != 1], image[mask != 1])
    assert not np.array_equal(out[mask == 1], image[mask == 1])


def test_background_can_be_drawn_when_not_skipped():
    image, mask = _scene()
    out = MaskAnnotator(colors=[GREEN, RED], skip_labels=(), contour_thickness=0).annotate(
        image, mask
    )
    assert not np.array_equal(out[mask == 0], image[mask == 0])


def test_empty_mask_returns_an_unchanged_copy():
    image, _ = _scene()
    out = MaskAnnotator().annotate(image, np.zeros((H, W), np.uint8))
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)


def test_shape_mismatch_is_a_clear_error():
    image, _ = _scene()
    with pytest.raises(ValueError, match=r"mask shape \(10, 10\) does not match image shape"):
        MaskAnnotator().annotate(image, np.zeros((10, 10), np.uint8))


@pytest.mark.parametrize(
    "mask", [np.zeros((H, W), np.int32), np.zeros((H, W), bool), np.zeros((H, W, 1), np.uint8)]
)
def test_wrong_mask_type_is_a_clear_error(mask):
    image, _ = _scene()
    with pytest.raises(ValueError, match="uint8 HxW label map"):
        MaskAnnotator().annotate(image, mask)


def test_non_bgr_image_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        MaskAnnotator().annotate(np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8))


def test_draw_refuses_a_read_only_canvas():
    image, mask = _scene()
    image.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        MaskAnnotator().draw(image, mask)


def test_bad_style_is_a_clear_error():
    with pytest.raises(ValueError, match="opacity"):
        MaskAnnotator(opacity=1.5)
    with pytest.raises(ValueError, match="contour_thickness"):
        MaskAnnotator(contour_thickness=-1)
