"""No-reference speckle measures (tools/noref_metrics.py) on synthetic images with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tools import noref_metrics as nr


def test_enl_of_a_gamma_speckle_field_is_its_number_of_looks() -> None:
    rng = np.random.default_rng(0)
    for looks in (1.0, 4.0, 9.0):
        field = rng.gamma(looks, 50.0 / looks, size=(400, 400))
        assert nr.enl(field) == pytest.approx(looks, rel=0.05)
    assert nr.enl(np.full((8, 8), 7.0)) == float("inf")


def test_cnr_of_two_known_regions() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(100.0, 10.0, size=(300, 300))
    b = rng.normal(60.0, 5.0, size=(300, 300))
    assert nr.cnr(a, b) == pytest.approx(40.0 / np.sqrt(125.0), rel=0.03)
    assert nr.cnr(a, a) == pytest.approx(0.0)


def _speckled_scene(rng: np.random.Generator) -> np.ndarray:
    """Left half: flat tissue (gamma speckle, 4 looks, mean 80); right half: tissue with
    bright stripes (structure); a black band at the bottom (no signal)."""
    img = rng.gamma(4.0, 20.0, size=(240, 320))
    stripes = (np.arange(320) // 12) % 2 == 1
    img[:, 160:] *= np.where(stripes[160:], 2.5, 0.6)
    img[200:, :] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def test_homogeneous_windows_are_flat_speckled_tissue() -> None:
    img = _speckled_scene(np.random.default_rng(2))
    area = np.ones(img.shape, bool)
    windows = nr.homogeneous_windows(img, area, 16, count=6)
    assert len(windows) == 6
    for w in windows:
        assert w.x + w.size <= 160 and w.y + w.size <= 200, w  # not the stripes, not the black
    assert windows == nr.homogeneous_windows(img, area, 16, count=6)  # reproducible
    none_inside = nr.homogeneous_windows(img, np.zeros(img.shape, bool), 16)
    assert none_inside == []


def test_contrast_pair_is_brightest_and_darkest() -> None:
    img = np.zeros((32, 64), np.uint8)
    img[:, :32], img[:, 32:] = 50, 150
    a, b = nr.Window(0, 32, 16), nr.Window(0, 0, 16)
    assert nr.contrast_pair(img, [b, a]) == (a, b)
    assert nr.contrast_pair(img, [a]) is None


def test_edge_preservation_identity_blur_and_flat() -> None:
    rng = np.random.default_rng(3)
    img = np.full((128, 128), 40.0)
    img[:, 64:] = 160.0
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    edges = nr.edge_pixels(img, np.ones(img.shape, bool))
    assert edges[:, 60:68].sum() > 0.8 * edges.sum()  # the step, not the noise
    assert nr.edge_preservation(img, img, edges) == pytest.approx(1.0)
    blurred = cv2.GaussianBlur(img, (0, 0), 4)
    assert nr.edge_preservation(blurred, img, edges) < 0.8
    denoised = cv2.GaussianBlur(img, (0, 0), 0.8)  # mild smoothing keeps the step
    assert nr.edge_preservation(denoised, img, edges) > 0.9
    assert nr.edge_preservation(np.full_like(img, 100), img, edges) == pytest.approx(0.0)


def test_imaging_area_keeps_the_sector_and_drops_text() -> None:
    rng = np.random.default_rng(4)
    img = np.zeros((240, 320), np.uint8)
    sector = np.zeros_like(img)
    cv2.ellipse(sector, (160, 10), (200, 200), 0, 60, 120, 255, -1)
    img[sector > 0] = (
        rng.gamma(4.0, 15.0, size=int((sector > 0).sum())).clip(1, 255).astype(np.uint8)
    )
    cv2.circle(img, (160, 120), 20, 0, -1)  # a dark cavity inside the tissue
    cv2.putText(img, "Gen THI", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    area = nr.imaging_area(img)
    assert not area[:30, :80].any()  # the text
    assert area[120, 160]  # the cavity (a hole in the tissue) belongs to the area
    assert area[150, 160] and not area[5, 5]
    only_left = np.zeros(img.shape, bool)
    only_left[:, :160] = True
    assert not nr.imaging_area(img, only_left)[:, 160:].any()
