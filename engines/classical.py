"""Classical OpenCV methods behind the same pipeline interface (backend `classical`).

Speckle reduction (task denoising, output image; grey or BGR frames):
    classical-median       5 x 5 median filter
    classical-bilateral    bilateral filter, 9 px neighbourhood, sigma colour 40, sigma space 5
    classical-nlm          non-local means (h 20, 5 x 5 patches, 15 x 15 search window)
    classical-guided       self-guided filter (He et al. 2010), 7 x 7 boxes, eps 100 levels^2: an
                           edge-preserving smoother for after a denoising network (e.g.
                           us-denoise-v2+classical-guided); too gentle for raw speckle
Segmentation (task segmentation, label map):
    classical-otsu         ultrasound, the labels of us-seg: background, anechoic, lesion,
                           interface (Otsu thresholds, morphology, connected components)
    classical-instruments  endoscopy, background / instrument (Otsu on saturation, morphology,
                           connected components)
Chain them with '+', e.g. `classical-nlm+classical-otsu` (the "traditional" baseline).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np

from engines.api import InferenceResult
from engines.preprocess import check_image
from engines.registry import ModelError

US_LABELS = ["background", "anechoic", "lesion", "interface"]
ENDO_LABELS = ["background", "instrument"]


def _grey(image: np.ndarray, pixel_format: str) -> np.ndarray:
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGR2GRAY if pixel_format == "bgr8" else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(image, code)


# --- speckle reduction ---------------------------------------------------------------------


def median(image: np.ndarray, pixel_format: str) -> np.ndarray:
    return cv2.medianBlur(image, 5)


def bilateral(image: np.ndarray, pixel_format: str) -> np.ndarray:
    return cv2.bilateralFilter(image, 9, 40, 5)


def nlm(image: np.ndarray, pixel_format: str) -> np.ndarray:
    if image.ndim == 2:
        return cv2.fastNlMeansDenoising(image, None, 20, 5, 15)
    return cv2.fastNlMeansDenoisingColored(image, None, 20, 20, 5, 15)


GUIDED_RADIUS = 3  # box side 2r + 1
GUIDED_EPS = 100.0  # in squared grey levels: variance below this is smoothed, above kept


def guided(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """Self-guided filter: per box, the linear fit a * I + b of the image to itself, with a
    shrunk towards 0 where the local variance is below GUIDED_EPS; each channel alone."""
    x = image.astype(np.float32)
    size = (2 * GUIDED_RADIUS + 1,) * 2

    def box(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, size, borderType=cv2.BORDER_REFLECT)

    mean = box(x)
    var = box(x * x) - mean * mean
    a = var / (var + GUIDED_EPS)
    b = mean - a * mean
    out = box(a) * x + box(b)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --- segmentation --------------------------------------------------------------------------


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _field_of_view(image: np.ndarray) -> np.ndarray:
    """uint8 0/255: the convex hull of the largest non-black region (the probe's sector)."""
    lit = (cv2.GaussianBlur(image, (0, 0), 3) > 2).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    fov = np.zeros_like(image)
    if n > 1:
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        points = cv2.findNonZero((labels == biggest).astype(np.uint8))
        cv2.fillConvexPoly(fov, cv2.convexHull(points), 255)
    return fov


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values (a 1-D array)."""
    if values.size == 0:
        return 0.0
    t, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t)


def _components(mask: np.ndarray, min_area: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected components of a 0/1 mask with areas >= min_area: (count, labels, stats)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return n, np.where(keep[labels], labels, 0), stats


def otsu_ultrasound(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """B-mode frame -> labels of US_LABELS.

    1. Smooth (median 5, Gaussian sigma 2); the field of view is the hull of the lit region.
    2. Tissue level: a broad local median (on a 1/8 image, dark pixels replaced by the global
       median first); contrast = smoothed - tissue level.
    3. Anechoic: darker than Otsu's threshold of the darker-than-tissue pixels, and well below
       tissue. Bright: above Otsu's threshold of the brighter-than-tissue pixels.
    4. Opening/closing, components below a minimum area dropped. Bright components that are
       long and thin are interfaces, compact ones lesions; compact moderately dark components
       (between anechoic and tissue) are lesions too.
    """
    grey = _grey(image, pixel_format)
    h, w = grey.shape
    s = cv2.GaussianBlur(cv2.medianBlur(grey, 5), (0, 0), 2)
    fov = _field_of_view(grey) > 0
    level = float(np.median(s[fov])) if fov.any() else 0.0
    filled = np.where(s < 0.5 * level, np.uint8(level), s)  # dark structures do not pull it down
    small = cv2.resize(filled, (max(w // 8, 1), max(h // 8, 1)), interpolation=cv2.INTER_AREA)
    tissue = cv2.resize(cv2.medianBlur(small, 9), (w, h), interpolation=cv2.INTER_LINEAR)
    contrast = s.astype(np.int16) - tissue.astype(np.int16)
    area = h * w
    min_area = max(area // 4000, 4)
    labels = np.zeros((h, w), np.uint8)

    below = fov & (contrast < 0)
    t_dark = _otsu(s[below]) if below.any() else 0.0
    anechoic: np.ndarray = fov & ((s <= t_dark) | (contrast < -75)) & (contrast < -40)
    anechoic = cv2.morphologyEx(anechoic.astype(np.uint8), cv2.MORPH_OPEN, _ellipse(5))
    _, comp, _ = _components(anechoic, min_area)
    labels[comp > 0] = 1

    hypo = fov & (contrast < -20) & (labels == 0)
    hypo = cv2.morphologyEx(hypo.astype(np.uint8), cv2.MORPH_OPEN, _ellipse(5))
    n, comp, stats = _components(hypo, 4 * min_area)
    for i in range(1, n):
        bw, bh = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]
        if stats[i, cv2.CC_STAT_AREA] >= 4 * min_area and max(bw, bh) < 3 * min(bw, bh):
            labels[comp == i] = 2

    above = fov & (contrast > 0)
    t_bright = max(_otsu(s[above]), level + 20) if above.any() else 255.0
    bright: np.ndarray = fov & (s > t_bright) & (contrast > 20)
    bright = cv2.morphologyEx(bright.astype(np.uint8), cv2.MORPH_CLOSE, _ellipse(5))
    n, comp, stats = _components(bright, min_area)
    for i in range(1, n):
        bw, bh = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]
        thin = bw > 3 * bh or stats[i, cv2.CC_STAT_AREA] < 0.35 * bw * bh
        labels[(comp == i) & (labels == 0)] = 3 if thin else 2
    labels[~fov] = 0
    return labels


def otsu_instruments(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """Endoscopy frame -> labels of ENDO_LABELS.

    Instruments are grey metal on red tissue: low saturation. Inside the lit circular field of
    view, pixels below Otsu's saturation threshold (and not black) are candidates; specular
    highlights (very bright, also unsaturated) are removed by a size-limited opening, then
    closing, and components smaller than 1/400 of the frame are dropped.
    """
    if image.ndim == 2:
        raise ValueError("classical-instruments needs a colour frame (bgr8 or rgb8)")
    code = cv2.COLOR_BGR2HSV if pixel_format == "bgr8" else cv2.COLOR_RGB2HSV
    hsv = cv2.cvtColor(cv2.GaussianBlur(image, (0, 0), 1.5), code)
    sat, val = hsv[:, :, 1], hsv[:, :, 2]
    fov: np.ndarray = _field_of_view(val) > 0
    fov = cv2.erode(fov.astype(np.uint8), _ellipse(9)) > 0
    t = _otsu(sat[fov]) if fov.any() else 0.0
    cand: np.ndarray = fov & (sat < t) & (val > 25)
    cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, _ellipse(7))
    cand = cv2.morphologyEx(cand, cv2.MORPH_CLOSE, _ellipse(9))
    _, comp, _ = _components(cand, max(image.shape[0] * image.shape[1] // 400, 4))
    return (comp > 0).astype(np.uint8)


Method = Callable[[np.ndarray, str], np.ndarray]
DENOISERS: dict[str, Method] = {
    "classical-median": median,
    "classical-bilateral": bilateral,
    "classical-nlm": nlm,
    "classical-guided": guided,
}
SEGMENTERS: dict[str, tuple[Method, list[str]]] = {
    "classical-otsu": (otsu_ultrasound, US_LABELS),
    "classical-instruments": (otsu_instruments, ENDO_LABELS),
}


class ClassicalPipeline:
    """A classical method as an `InferencePipeline` (CPU, OpenCV, no model file)."""

    backend = "classical"
    device = "cpu"
    precision = "uint8"
    selection = "classical OpenCV method"
    confidence = True  # (a classical mask has no confidence map)

    def __init__(self, name: str) -> None:
        self.model_id = name
        if name in DENOISERS:
            self.task, self.labels, self._method = "denoising", [], DENOISERS[name]
        elif name in SEGMENTERS:
            self._method, labels = SEGMENTERS[name]
            self.task, self.labels = "segmentation", list(labels)
        else:
            raise ModelError(
                f"unknown classical method {name!r}; one of {', '.join(list_classical())}"
            )

    def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
        check_image(image, pixel_format)
        t0 = time.perf_counter()
        out = self._method(image, pixel_format)
        ms = {"engine": (time.perf_counter() - t0) * 1e3}
        if self.task == "denoising":
            return InferenceResult(mask=None, image=out, timings_ms=ms)
        return InferenceResult(mask=out, timings_ms=ms)

    def close(self) -> None:
        pass


def list_classical() -> list[str]:
    return [*DENOISERS, *SEGMENTERS]
