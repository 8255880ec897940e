"""Postprocessing: segmentation logits -> a uint8 label map, or a model's image -> uint8 image."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    """C x h x w scores -> uint8 h x w index of the largest (ties go to the lower index).

    Same result as `np.argmax(axis=0)`, in a running compare-and-max that is ~10x faster.
    """
    scores = logits if logits.dtype == np.float32 else logits.astype(np.float32)
    best = scores[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    for c in range(1, scores.shape[0]):
        wins = cv2.compare(scores[c], best, cv2.CMP_GT)  # 255 where class c beats all before it
        cv2.max(labels, cv2.bitwise_and(wins, c), dst=labels)  # type: ignore[call-overload]  # cv2 takes a scalar; its stub says arrays only  # c > every earlier winner
        cv2.max(best, scores[c], dst=best)
    return labels


@lru_cache(maxsize=16)
def _nearest_index(src: int, dst: int) -> np.ndarray:
    return np.minimum(np.floor((np.arange(dst) + 0.5) * src / dst), src - 1).astype(np.intp)


def labels_from_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """1 x C x h x w logits -> uint8 H x W label map, `size` = (H, W).

    Label = argmax over C (ties go to the lower class index), then nearest-neighbour resize with
    pixel centres aligned: output (y, x) takes the label at
    (floor((y + 0.5) * h / H), floor((x + 0.5) * w / W)), computed in float64.
    """
    if not isinstance(logits, np.ndarray) or logits.ndim != 4 or logits.shape[0] != 1:
        shape = getattr(logits, "shape", None)
        raise ValueError(f"expected logits of shape 1 x C x h x w, got {shape}")
    classes = logits.shape[1]
    if not 1 <= classes <= 256:
        raise ValueError(f"expected 1..256 classes for a uint8 label map, got {classes}")
    height, width = size
    if height <= 0 or width <= 0:
        raise ValueError(f"output size must be positive, got {height}x{width}")
    return _resized(argmax_labels(logits[0]), size)


def two_class_logits(output: np.ndarray, sigmoid: str) -> np.ndarray:
    """1 x 1 x h x w sigmoid output -> 1 x 2 x h x w logits whose softmax is (1 - p, p).

    `sigmoid` says what the channel holds: "logits" (z, p = sigmoid(z)) or "probabilities" (p).
    """
    if output.ndim != 4 or output.shape[1] != 1:
        raise ValueError(f"a sigmoid output must be 1 x 1 x h x w, got {output.shape}")
    x = output.astype(np.float32)
    if sigmoid == "logits":
        return np.concatenate([np.zeros_like(x), x], axis=1)
    if sigmoid != "probabilities":
        raise ValueError(f"sigmoid must be 'logits' or 'probabilities', got {sigmoid!r}")
    p = np.clip(x, np.float32(1e-6), np.float32(1.0 - 1e-6))
    return np.concatenate([np.log1p(-p), np.log(p)], axis=1)


def labels_with_confidence(
    logits: np.ndarray, size: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """1 x C x h x w logits -> (uint8 H x W label map, uint8 H x W confidence 0..255).

    Confidence is the softmax margin p(best) - p(second best) (engines/applicability.py),
    quantised to round(255 x margin). Pixels whose margin is below `threshold` get label 0
    (background). Both maps are resized as in `labels_from_logits` (nearest, centred pixels).
    """
    labels, margin = _labels_and_margin(logits, size, threshold)
    confidence = np.clip(np.rint(margin * np.float32(255.0)), 0, 255).astype(np.uint8)
    return _resized(labels, size), _resized(confidence, size)


def confident_labels(logits: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
    """The label map of `labels_with_confidence` alone: no confidence map is made (the margin
    only for a `threshold` > 0), for a reader that never draws it."""
    if threshold <= 0.0:
        return labels_from_logits(logits, size)
    return _resized(_labels_and_margin(logits, size, threshold)[0], size)


def _labels_and_margin(
    logits: np.ndarray, size: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Label map (margin below `threshold`: 0) and softmax margin, both at the logits' h x w."""
    from engines.applicability import softmax_margin

    labels = labels_from_logits(logits, logits.shape[2:])  # checks the shape; no resize
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"output size must be positive, got {size[0]}x{size[1]}")
    margin = softmax_margin(logits[0])
    if threshold > 0.0:
        labels[margin < np.float32(threshold)] = 0
    return labels, margin


def _resized(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of h x w `plane` to `size` with pixel centres aligned."""
    (h, w), (height, width) = plane.shape, size
    if (h, w) == (height, width):
        return plane
    return np.take(np.take(plane, _nearest_index(h, height), 0), _nearest_index(w, width), 1)


def image_from_output(output: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    """1 x C x h x w model image (C = 1 or 3) -> uint8 H x W (x 3) image, `size` = (H, W).

    pixel = clip(round(scale x value), 0, 255); then a bilinear resize (cv2.INTER_LINEAR,
    half-pixel centres) to the frame's size when it differs.
    """
    if not isinstance(output, np.ndarray) or output.ndim != 4 or output.shape[0] != 1:
        raise ValueError(f"expected an output of shape 1 x C x h x w, got {getattr(output, 'shape', None)}")
    if output.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 output channels, got {output.shape[1]}")
    y = output[0].astype(np.float32, copy=False) * np.float32(scale)
    pixels = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    pixels = pixels[0] if pixels.shape[0] == 1 else np.ascontiguousarray(pixels.transpose(1, 2, 0))
    height, width = size
    if pixels.shape[:2] != (height, width):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    return pixels
