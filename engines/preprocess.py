"""CPU preprocessing: a uint8 frame -> the model's NCHW input tensor.

The math, exactly (a CUDA kernel reimplements it and must match to 1e-4 in normalised units):

Let `src` be the frame as float, H x W x Cs (Cs = 1 for gray8, 3 for bgr8/rgb8), and the model
input h x w with channels Cm (card `input.channels`: gray, rgb or bgr).

1. Resize, bilinear with OpenCV's half-pixel convention (`cv2.INTER_LINEAR`, no antialiasing,
   also when shrinking): output pixel (y, x) samples the source at
       sy = clamp((y + 0.5) * H / h - 0.5, 0, H - 1),  sx = clamp((x + 0.5) * W / w - 0.5, 0, W - 1)
   with y0 = floor(sy), y1 = min(y0 + 1, H - 1), ay = sy - y0 (likewise x), and
       r = (1-ay)(1-ax) src[y0,x0] + (1-ay) ax src[y0,x1] + ay (1-ax) src[y1,x0] + ay ax src[y1,x1].
   Same size: r = src.
2. Colour, per pixel (linear, so it commutes with step 1):
       gray from bgr/rgb: g = 0.299 R + 0.587 G + 0.114 B   (ITU-R BT.601 weights)
       rgb/bgr from gray: the grey value in all three channels
       rgb <-> bgr: channels reversed.
3. Normalise per model channel c: v = (r / 255 - mean[c]) / std[c]
   (computed as r * (1 / (255 std[c])) - mean[c] / std[c] in float32).
4. Layout: HWC -> CHW, a leading batch axis of 1; cast to the card's dtype (float32 or float16).

Steps 1-3 run in float32: the result is within ~1e-5 of the same formula in float64.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.pixels import pixel_format as pixel_format_of
from engines.registry import ModelInput

ENGINE_FORMATS = ("gray8", "bgr8", "rgb8")
BT601 = {"r": 0.299, "g": 0.587, "b": 0.114}


def check_image(image: object, pixel_format: str) -> np.ndarray:
    """The image as a non-empty uint8 array of `pixel_format` (one the engines take), or a
    clear ValueError: the engines' entry check (pipelines call it once per frame)."""
    image = pixel_format_of(pixel_format, ENGINE_FORMATS).check(image)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


def _colour_matrix(pixel_format: str, channels: str) -> np.ndarray | None:
    """Cm x Cs matrix taking source channels to model channels, or None for the identity."""
    src = {"gray8": "y", "bgr8": "bgr", "rgb8": "rgb"}[pixel_format]
    dst = {"gray": "y", "bgr": "bgr", "rgb": "rgb"}[channels]
    if src == dst:
        return None
    if dst == "y":
        return np.array([[BT601[c] for c in src]], np.float32)
    if src == "y":
        return np.ones((3, 1), np.float32)
    return np.array([[1.0 if s == d else 0.0 for s in src] for d in dst], np.float32)


def preprocess(image: np.ndarray, pixel_format: str, spec: ModelInput) -> np.ndarray:
    """uint8 frame (already checked: `check_image`) -> contiguous 1 x C x h x w tensor of
    `spec.dtype` (see the module docstring)."""
    x: np.ndarray = image.astype(np.float32)
    if x.shape[:2] != (spec.height, spec.width):
        x = cv2.resize(x, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    if x.ndim == 2:
        x = x[:, :, None]
    matrix = _colour_matrix(pixel_format, spec.channels)
    if matrix is not None:
        x = x @ matrix.T  # h x w x Cm
    scale = np.array([1.0 / (255.0 * s) for s in spec.std], np.float32)
    offset = np.array([m / s for m, s in zip(spec.mean, spec.std, strict=True)], np.float32)
    x = x * scale - offset
    out = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    return out if spec.dtype == "float32" else out.astype(np.float16)
