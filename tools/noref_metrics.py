"""No-reference speckle measures for real frames: ENL, CNR, edge preservation.

Real scans have no clean image, so a despeckler is judged on its output alone, on regions
chosen from the *input* (the same pixels for every method):

- homogeneous windows (`homogeneous_windows`): square windows on a grid inside the imaging
  area, with some tissue (mean >= `min_mean`, no black pixels) and speckle (input coefficient
  of variation >= `min_cv`), ranked by how flat the underlying tissue is: the standard
  deviation of the input blurred with a Gaussian of sigma = window / 4 (speckle averaged away,
  structure kept), divided by the window mean. The `count` flattest win; ties by position.
- ENL (equivalent number of looks) of a window: mean^2 / variance. Higher: smoother.
- CNR between two windows a, b: |mean_a - mean_b| / sqrt(var_a + var_b); the pair is the
  brightest and the darkest homogeneous window (by input mean).
- edge preservation: at the input's strongest edges (the top `edge_fraction` of the gradient
  magnitude of the input blurred with sigma `edge_sigma`, inside the imaging area),
  sum <grad_out, grad_in> / sum |grad_in|^2 of the blurred images: 1 for the identity, less
  when edges are blurred, 0 for a flat output.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Window:
    y: int
    x: int
    size: int

    def of(self, image: np.ndarray) -> np.ndarray:
        return image[self.y : self.y + self.size, self.x : self.x + self.size]


def enl(pixels: np.ndarray) -> float:
    """Equivalent number of looks: mean^2 / variance (inf for a constant window)."""
    p = pixels.astype(np.float64)
    var = float(p.var())
    return float("inf") if var == 0 else float(p.mean()) ** 2 / var


def cnr(a: np.ndarray, b: np.ndarray) -> float:
    """Contrast-to-noise ratio of two regions: |mean_a - mean_b| / sqrt(var_a + var_b)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    noise = float(np.sqrt(a64.var() + b64.var()))
    diff = abs(float(a64.mean()) - float(b64.mean()))
    return float("inf") if noise == 0 else diff / noise


def window_size(shape: tuple[int, ...]) -> int:
    """Window side for a frame: 1/24 of its shorter side, at least 8 pixels."""
    return max(8, round(min(shape[:2]) / 24))


def homogeneous_windows(
    image: np.ndarray,
    area: np.ndarray,
    size: int,
    count: int = 8,
    min_mean: float = 10.0,
    min_cv: float = 0.08,
) -> list[Window]:
    """The `count` flattest speckled windows of a grey frame inside boolean `area` (see module)."""
    img = image.astype(np.float64)
    smooth = cv2.GaussianBlur(img, (0, 0), size / 4, borderType=cv2.BORDER_REFLECT)
    scored: list[tuple[float, int, int]] = []
    for y in range(0, img.shape[0] - size + 1, size):
        for x in range(0, img.shape[1] - size + 1, size):
            w = Window(y, x, size)
            if not w.of(area).all():
                continue
            raw = w.of(img)
            mean = float(raw.mean())
            if mean < min_mean or (raw == 0).any() or float(raw.std()) / mean < min_cv:
                continue
            scored.append((float(w.of(smooth).std()) / mean, y, x))
    scored.sort()
    return [Window(y, x, size) for _, y, x in scored[:count]]


def contrast_pair(image: np.ndarray, windows: list[Window]) -> tuple[Window, Window] | None:
    """(brightest, darkest) window by the input's mean, or None with fewer than two."""
    if len(windows) < 2:
        return None
    by_mean = sorted(windows, key=lambda w: (float(w.of(image).mean()), w.y, w.x))
    return by_mean[-1], by_mean[0]


def _gradient(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    s = cv2.GaussianBlur(image.astype(np.float64), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return (
        cv2.Sobel(s, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT),
        cv2.Sobel(s, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT),
    )


def edge_pixels(
    image: np.ndarray, area: np.ndarray, sigma: float = 2.0, fraction: float = 0.05
) -> np.ndarray:
    """Boolean mask: the top `fraction` of the blurred input's gradient magnitude in `area`."""
    gx, gy = _gradient(image, sigma)
    mag = np.hypot(gx, gy)
    inside = mag[area]
    if inside.size == 0:
        return np.zeros(image.shape, bool)
    cut = float(np.quantile(inside, 1 - fraction))
    return area & (mag >= cut) & (mag > 0)


def edge_preservation(
    output: np.ndarray, image: np.ndarray, edges: np.ndarray, sigma: float = 2.0
) -> float:
    """sum <grad out, grad in> / sum |grad in|^2 over `edges` (blurred images; 1 = identity)."""
    ox, oy = _gradient(output, sigma)
    ix, iy = _gradient(image, sigma)
    den = float((ix[edges] ** 2 + iy[edges] ** 2).sum())
    if den == 0:
        return float("nan")
    return float((ox[edges] * ix[edges] + oy[edges] * iy[edges]).sum()) / den


def imaging_area(
    image: np.ndarray, within: np.ndarray | None = None, level: float = 4.0, margin: int = 6
) -> np.ndarray:
    """Boolean mask of the imaging area of a grey frame, found from the frame (and `within`,
    e.g. the file's DICOM ultrasound regions, when known).

    Pixels (inside `within`) whose 9 x 9 mean exceeds `level`, closed with a 15 x 15 ellipse; the largest
    connected component, its holes filled (dark cavities inside the tissue), eroded by `margin`
    pixels so the border of the sector is not an "edge". Burnt-in text, rulers and icons are
    separate small components and fall out.
    """
    img = image.astype(np.float32)
    bright = cv2.blur(img, (9, 9)) > level
    if within is not None:
        bright &= within
    on = cv2.morphologyEx(
        bright.astype(np.uint8), cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    )
    n, labels, stats, _ = cv2.connectedComponentsWithStats(on, connectivity=8)
    if n < 2:
        return np.zeros(image.shape, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    comp = (labels == biggest).astype(np.uint8)
    flood = np.pad(comp, 1)
    mask = np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, mask, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    comp = comp | holes.astype(np.uint8)
    if within is not None:
        comp &= within.astype(np.uint8)
    if margin > 0:
        comp = cv2.erode(comp, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2))
    return comp > 0
