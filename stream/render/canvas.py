"""Checks for the images annotators read (any BGR uint8 array) and draw on (an owned canvas)."""

from __future__ import annotations

import numpy as np


def check_bgr(image: np.ndarray, name: str = "image") -> None:
    """Raise ValueError unless `image` is a uint8 HxWx3 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be a uint8 HxWx3 BGR array, got {image.dtype} {image.shape}")


def owned_copy(image: np.ndarray) -> np.ndarray:
    """A new, writable, C-contiguous copy of BGR `image` (which may be a read-only view)."""
    check_bgr(image)
    return np.array(image, dtype=np.uint8, order="C", copy=True)


def check_canvas(canvas: np.ndarray) -> None:
    """Raise ValueError unless `canvas` is a writable C-contiguous uint8 HxWx3 array.

    OpenCV draws in place only into such arrays; anything else would be drawn into a temporary
    copy and the drawing silently lost.
    """
    check_bgr(canvas, "canvas")
    if not canvas.flags.writeable:
        raise ValueError("canvas is read-only: use annotate(), which draws on a copy")
    if not canvas.flags.c_contiguous:
        raise ValueError("canvas must be C-contiguous: use annotate(), which draws on a copy")
