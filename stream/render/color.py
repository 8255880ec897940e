"""Pixel-format conversion to BGR and the default label palette."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

BGR = tuple[int, int, int]

RENDERABLE_FORMATS = ("gray8", "bgr8", "rgb8")

# Label i is drawn in DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] (BGR). Entry 0 belongs to the
# background label, which annotators skip by default; the rest are saturated, mutually distinct
# colours that stay readable over grey ultrasound and red-dominated endoscopy.
DEFAULT_PALETTE: tuple[BGR, ...] = (
    (0, 0, 0),  # 0: background (not drawn by default)
    (255, 128, 0),  # 1: azure
    (0, 255, 255),  # 2: yellow
    (255, 0, 255),  # 3: magenta
    (0, 255, 0),  # 4: green
    (0, 128, 255),  # 5: orange
    (255, 255, 0),  # 6: cyan
    (128, 0, 255),  # 7: pink-violet
    (0, 255, 128),  # 8: lime
    (255, 0, 128),  # 9: purple
    (128, 255, 255),  # 10: light yellow
    (255, 128, 255),  # 11: light magenta
    (128, 255, 128),  # 12: light green
    (0, 0, 255),  # 13: red
    (255, 255, 255),  # 14: white
    (192, 192, 0),  # 15: teal
)
# Detection labels are all classes (no background): box label i is drawn in
# DETECTION_PALETTE[i % 15], the default palette without its black entry.
DETECTION_PALETTE: tuple[BGR, ...] = DEFAULT_PALETTE[1:]


def to_bgr(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """Return a new contiguous uint8 HxWx3 BGR copy of `image` (gray8, bgr8 or rgb8)."""
    if pixel_format not in RENDERABLE_FORMATS:
        raise ValueError(
            f"cannot render pixel format {pixel_format!r}; expected one of "
            f"{', '.join(RENDERABLE_FORMATS)}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"{pixel_format} image must be uint8, got {image.dtype}")
    if pixel_format == "gray8":
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim != 2:
            raise ValueError(f"gray8 image must be HxW or HxWx1, got shape {image.shape}")
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{pixel_format} image must be HxWx3, got shape {image.shape}")
    if pixel_format == "rgb8":
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    return np.array(image, dtype=np.uint8, order="C", copy=True)


def check_palette(colors: Sequence[BGR] | None) -> tuple[BGR, ...]:
    """Validate a palette (BGR triples, 0..255); None gives DEFAULT_PALETTE."""
    if colors is None:
        return DEFAULT_PALETTE
    palette = tuple(tuple(int(c) for c in color) for color in colors)
    if not palette:
        raise ValueError("colors must hold at least one BGR colour")
    for i, color in enumerate(palette):
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ValueError(f"colors[{i}] must be a BGR triple in 0..255, got {colors[i]!r}")
    return palette  # type: ignore[return-value]


def label_color(palette: Sequence[BGR], label: int) -> BGR:
    """The colour of `label`: palette entries repeat for labels beyond the palette."""
    return palette[label % len(palette)]


def palette_lut(palette: Sequence[BGR]) -> np.ndarray:
    """A 1x256x3 uint8 lookup table mapping each label value to its colour (for cv2.LUT)."""
    lut = np.array([label_color(palette, v) for v in range(256)], dtype=np.uint8)
    return lut.reshape(1, 256, 3)
