"""Letterbox: fit a frame into the model's input keeping its aspect ratio, pad the rest.

The frame (H x W) is scaled by s = min(h / H, w / W) to nw x nh = round(W s) x round(H s)
(bilinear, `cv2.INTER_LINEAR`), placed at (left, top) = ((w - nw) // 2, (h - nh) // 2) in an
h x w canvas filled with the pad value (YOLO exports expect 114). A point (x, y) in model-input
pixels is (left + x_img * nw / W, top + y_img * nh / H); `Letterbox.to_image` inverts that.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """Where the frame sits in the model input: per-axis scale and the padding before it."""

    image_height: int
    image_width: int
    scale_x: float  # nw / W
    scale_y: float  # nh / H
    left: int
    top: int

    def to_image(self, xyxy: np.ndarray) -> np.ndarray:
        """N x 4 boxes (x0, y0, x1, y1) in model-input pixels -> image pixels, clipped to the
        image (0..W, 0..H). Returns a new float32 array."""
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - self.left) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.top) / self.scale_y
        np.clip(out[:, 0::2], 0.0, float(self.image_width), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(self.image_height), out=out[:, 1::2])
        return out

    def to_model(self, xyxy: np.ndarray) -> np.ndarray:
        """N x 4 boxes in image pixels -> model-input pixels (the inverse of `to_image`)."""
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        out = np.empty_like(boxes)
        out[:, 0::2] = boxes[:, 0::2] * self.scale_x + self.left
        out[:, 1::2] = boxes[:, 1::2] * self.scale_y + self.top
        return out


def letterbox(
    image: np.ndarray, height: int, width: int, pad_value: int = 114
) -> tuple[np.ndarray, Letterbox]:
    """uint8 H x W (x C) frame -> (uint8 height x width (x C) canvas, where the frame sits)."""
    if image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError(f"letterbox needs a uint8 H x W (x C) image, got {image.dtype} {image.shape}")
    if height <= 0 or width <= 0:
        raise ValueError(f"letterbox size must be positive, got {height}x{width}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad value must be in 0..255, got {pad_value}")
    ih, iw = image.shape[:2]
    s = min(height / ih, width / iw)
    nw = min(max(1, round(iw * s)), width)
    nh = min(max(1, round(ih * s)), height)
    left, top = (width - nw) // 2, (height - nh) // 2
    resized = image
    if (nh, nw) != (ih, iw):
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2 and image.ndim == 3:  # cv2 drops a trailing axis of 1
        resized = resized[:, :, None]
    canvas = np.full((height, width, *image.shape[2:]), pad_value, np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    return canvas, Letterbox(ih, iw, nw / iw, nh / ih, left, top)
