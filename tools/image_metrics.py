"""Image quality against a clean reference: PSNR and SSIM, inside a mask (the field of view).

PSNR = 10 log10(255^2 / MSE), the MSE pooled over the masked pixels of all frames given.
SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
L = 255, computed in float64 and averaged over the masked pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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


def gmsd(image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014) inside `mask`; lower is better.

    Prewitt gradient magnitudes m_i, m_c of the two images (0-255 scale, no downsampling);
    GMS = (2 m_i m_c + C) / (m_i^2 + m_c^2 + C) with C = 170; GMSD = the standard deviation of
    GMS over the masked pixels. 0 for identical gradients; it rises with blurred or invented
    edges and with speckle left in (or put into) flat regions: it sees texture, which PSNR
    averages away.
    """
    kx = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float64) / 3

    def magnitude(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        gx = cv2.filter2D(a, -1, kx, borderType=cv2.BORDER_REFLECT)
        gy = cv2.filter2D(a, -1, kx.T, borderType=cv2.BORDER_REFLECT)
        return np.sqrt(gx * gx + gy * gy)

    mi, mc = magnitude(image), magnitude(clean)
    gms = (2 * mi * mc + 170.0) / (mi * mi + mc * mc + 170.0)
    return float(gms[mask].std())


def texture_windows(clean: np.ndarray, mask: np.ndarray, size: int = 16) -> list[tuple[int, int]]:
    """Top-left corners of the flattest third of the `size` x `size` grid windows that lie
    wholly inside `mask`, flatness = the mean Sobel gradient magnitude of `clean` (structure)
    in the window; ties by position. Empty if no window fits."""
    a = clean.astype(np.float64)
    grad = np.hypot(cv2.Sobel(a, cv2.CV_64F, 1, 0), cv2.Sobel(a, cv2.CV_64F, 0, 1))
    found = []
    for y in range(0, clean.shape[0] - size + 1, size):
        for x in range(0, clean.shape[1] - size + 1, size):
            if mask[y : y + size, x : x + size].all():
                found.append((float(grad[y : y + size, x : x + size].mean()), y, x))
    found.sort()
    return [(y, x) for _, y, x in found[: max(1, len(found) // 3)]] if found else []


def texture_variance(
    image: np.ndarray, clean: np.ndarray, mask: np.ndarray, size: int = 16
) -> tuple[float, float]:
    """(sum of the image's window variances, the clean image's) over `texture_windows`."""
    a, c = image.astype(np.float64), clean.astype(np.float64)
    out = ref = 0.0
    for y, x in texture_windows(clean, mask, size):
        out += float(a[y : y + size, x : x + size].var())
        ref += float(c[y : y + size, x : x + size].var())
    return out, ref


def texture_ratio(variances: tuple[float, float]) -> float:
    """sqrt(image variance / clean variance) in the flat windows (pooled `texture_variance`
    sums, over one or many frames): 1 = the clean image's texture, above 1 = speckle left in,
    below 1 = smoothed flatter than the clean image (inf if the clean windows are constant)."""
    out, ref = variances
    return math.inf if ref == 0 else math.sqrt(out / ref)


@dataclass
class ImageScores:
    """PSNR (the squared error pooled over all images), mean SSIM, mean GMSD and the texture
    ratio (pooled) of images against their clean references, added one at a time."""

    sse: float = 0.0
    pixels: int = 0
    ssims: list[float] = field(default_factory=list)
    gmsds: list[float] = field(default_factory=list)
    texture: tuple[float, float] = (0.0, 0.0)  # texture_variance sums: image, clean

    def add(self, image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> None:
        err, n = squared_error(image, clean, mask)
        self.sse, self.pixels = self.sse + err, self.pixels + n
        self.ssims.append(ssim(image, clean, mask))
        self.gmsds.append(gmsd(image, clean, mask))
        var_image, var_clean = texture_variance(image, clean, mask)
        self.texture = (self.texture[0] + var_image, self.texture[1] + var_clean)

    def result(self) -> dict[str, float]:
        """psnr_db, ssim, gmsd and texture_ratio."""
        return {
            "psnr_db": psnr_from_sse(self.sse, self.pixels),
            "ssim": float(np.mean(self.ssims)),
            "gmsd": float(np.mean(self.gmsds)),
            "texture_ratio": texture_ratio(self.texture),
        }
