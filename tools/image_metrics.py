"""Image quality against a clean reference: PSNR and SSIM, inside a mask (the field of view).

PSNR = 10 log10(255^2 / MSE), the MSE pooled over the masked pixels of all frames given.
SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
L = 255, computed in float64 and averaged over the masked pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def squared_error(image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """(sum of squared differences, pixel count) inside `mask`."""
    d = image.astype(np.float64)[mask] - clean.astype(np.float64)[mask]
    return float(np.dot(d, d)), int(d.size)


def psnr_from_sse(sse: float, count: int) -> float:
    return math.inf if sse == 0 else 10 * math.log10(255.0**2 * count / sse)


def psnr(image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    return psnr_from_sse(*squared_error(image, clean, mask))


def ssim_map(image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two grey images (float64)."""
    x, y = image.astype(np.float64), clean.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    return float(ssim_map(image, clean)[mask].mean())
