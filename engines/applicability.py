"""Applicability gate: how far a frame is from a model's training data, and a per-pixel confidence.

Score (method `input_stats`): a handful of image statistics of the frame, computed on a fixed
128 x 128 grey thumbnail (so they cost the same for any frame size and any backend), compared
with the same statistics of the model's training frames by a Mahalanobis distance:

    score = sqrt((f - mean)^T inv(cov) (f - mean)) / sqrt(len(f))

`mean` and `cov` (the reference statistics) and the threshold live in the model card under
`applicability` (written by `python -m tools.calibrate_gate MODEL`). A frame with score above the
threshold is "not applicable": the model was not trained on anything like it.

The statistics (FEATURES): the share of dark (background) and of very bright pixels, mean and
spread of the non-dark pixels, the share of saturated colour pixels (colour Doppler, coloured
UI), the mean gradient magnitude of the non-dark pixels, the speckle signal-to-noise ratio
(median mean/std over 8 x 8 blocks), and the share of flat blocks (text panels, uniform fills).

Confidence: the softmax margin p(best) - p(second best) per pixel, in 0..1 (`softmax_margin`),
sent as uint8 0..255 (engines/postprocess.labels_with_confidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

METHOD = "input_stats"
THUMB = 128  # statistics are computed on a THUMB x THUMB grey thumbnail
BLOCK = 8  # speckle statistics over BLOCK x BLOCK blocks of the thumbnail
DARK = 0.06  # grey level (0..1) below which a pixel counts as background
BRIGHT = 0.85
CHROMA = 40  # max - min channel (0..255) above which a pixel counts as coloured
FLAT_STD = 0.01  # a block whose std is below this (0..1 grey) is flat (text panel, fill)
FEATURES = (
    "dark_fraction",
    "bright_fraction",
    "tissue_mean",
    "tissue_std",
    "colour_fraction",
    "tissue_gradient",
    "speckle_snr",
    "flat_fraction",
)
VARIANCE_FLOOR = 1e-4  # added to the covariance diagonal (features are O(0.01..1))


def _grey_thumbnail(image: np.ndarray, pixel_format: str) -> tuple[np.ndarray, float]:
    """THUMB x THUMB float32 grey in 0..1, and the share of coloured pixels (0 for grey)."""
    small = cv2.resize(image, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    if small.ndim == 3 and small.shape[2] == 1:
        small = small[:, :, 0]
    colour = 0.0
    if small.ndim == 3:
        chroma = small.max(axis=2).astype(np.int16) - small.min(axis=2)
        colour = float(np.count_nonzero(chroma > CHROMA)) / chroma.size
        code = cv2.COLOR_RGB2GRAY if pixel_format == "rgb8" else cv2.COLOR_BGR2GRAY
        small = cv2.cvtColor(small, code)
    return small.astype(np.float32) * np.float32(1 / 255), colour


def frame_features(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """The FEATURES of one uint8 frame (gray8, bgr8 or rgb8), as float64."""
    g, colour = _grey_thumbnail(image, pixel_format)
    n = g.size
    tissue = g >= DARK
    n_tissue = int(np.count_nonzero(tissue))
    dark = 1.0 - n_tissue / n
    bright = float(np.count_nonzero(g > BRIGHT)) / n
    if n_tissue:
        mean, std = cv2.meanStdDev(g, mask=tissue.view(np.uint8))
        t_mean, t_std = float(mean[0, 0]), float(std[0, 0])
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        grad = float(cv2.mean(cv2.magnitude(gx, gy), mask=tissue.view(np.uint8))[0])
    else:
        t_mean = t_std = grad = 0.0
    blocks = g.reshape(THUMB // BLOCK, BLOCK, THUMB // BLOCK, BLOCK)
    b_mean = blocks.mean(axis=(1, 3))
    b_std = blocks.std(axis=(1, 3))
    lit = b_mean >= DARK
    snr = float(np.median(b_mean[lit] / np.maximum(b_std[lit], 1e-3))) if lit.any() else 0.0
    flat = float(np.count_nonzero(lit & (b_std < FLAT_STD))) / b_mean.size
    return np.array(
        [dark, bright, t_mean, t_std, colour, grad, min(snr, 20.0) / 10.0, flat], np.float64
    )


@dataclass(frozen=True)
class Reference:
    """Reference statistics of the training frames: the features' mean and inverse covariance."""

    mean: np.ndarray
    inv_cov: np.ndarray

    @staticmethod
    def fit(features: np.ndarray) -> Reference:
        """From an N x len(FEATURES) array of training-frame features."""
        if features.ndim != 2 or features.shape[1] != len(FEATURES) or len(features) < 2:
            raise ValueError(f"expected N >= 2 rows of {len(FEATURES)} features")
        mean = features.mean(axis=0)
        cov = np.cov(features, rowvar=False) + VARIANCE_FLOOR * np.eye(len(FEATURES))
        return Reference(mean, np.linalg.inv(cov))

    def score(self, features: np.ndarray) -> float:
        d = features - self.mean
        return float(np.sqrt(max(float(d @ self.inv_cov @ d), 0.0) / len(FEATURES)))

    def to_card(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "mean": [round(float(v), 8) for v in self.mean],
            "inv_cov": [[round(float(v), 6) for v in row] for row in self.inv_cov],
        }


@dataclass(frozen=True)
class Gate:
    """A model's applicability gate (the card's `applicability` section)."""

    reference: Reference
    threshold: float
    method: str = METHOD

    @staticmethod
    def from_card(raw: Any, where: str) -> Gate:
        """Parse a card's `applicability`; ValueError naming the key when malformed."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}.applicability: expected an object")
        method = raw.get("method")
        if method != METHOD:
            raise ValueError(f"{where}.applicability.method: expected {METHOD!r}, got {method!r}")
        if raw.get("features") != list(FEATURES):
            raise ValueError(
                f"{where}.applicability.features: expected {list(FEATURES)} "
                "(re-run python -m tools.calibrate_gate)"
            )
        threshold = raw.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 0:
            raise ValueError(f"{where}.applicability.threshold: expected a number > 0")
        try:
            mean = np.array(raw["mean"], np.float64)
            inv_cov = np.array(raw["inv_cov"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}.applicability: needs numeric mean and inv_cov") from None
        n = len(FEATURES)
        if mean.shape != (n,) or inv_cov.shape != (n, n) or not np.isfinite(inv_cov).all():
            raise ValueError(f"{where}.applicability: mean must be {n} numbers, inv_cov {n}x{n}")
        return Gate(Reference(mean, inv_cov), float(threshold))

    def assess(self, image: np.ndarray, pixel_format: str) -> dict[str, Any]:
        """`{"score", "threshold", "applicable", "method"}` for one frame (frame.meta contract)."""
        score = self.reference.score(frame_features(image, pixel_format))
        return {
            "score": round(score, 3),
            "threshold": self.threshold,
            "applicable": score <= self.threshold,
            "method": self.method,
        }


def softmax_margin(logits: np.ndarray) -> np.ndarray:
    """C x h x w logits -> h x w float32 p(best) - p(second best) of the softmax, in 0..1.

    With C = 1 the margin is 1 everywhere. Computed with OpenCV in float32: the largest logit is
    subtracted before exp, so large logits do not overflow.
    """
    scores = logits if logits.dtype == np.float32 else logits.astype(np.float32)
    if scores.shape[0] < 2:
        return np.ones(scores.shape[1:], np.float32)
    best = scores[0].copy()
    second = np.full_like(best, -np.inf)
    for c in range(1, scores.shape[0]):
        s = scores[c]
        second = np.maximum(second, np.minimum(best, s))
        cv2.max(best, s, dst=best)
    total = np.zeros_like(best)
    for c in range(scores.shape[0]):
        total += cv2.exp(scores[c] - best)
    # p(best) = 1 / total, p(second) = exp(second - best) / total
    return (1.0 - cv2.exp(second - best)) / total
