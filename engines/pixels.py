"""Pixel formats: what an image's array must be (dtype, channels), checked where images enter.

A leaf module (numpy only) shared by `stream` (the wire decoder, the grab stage's sources) and
`engines` (the pipeline's entry, which takes the 8-bit formats only). Code past those entries
trusts the format it was handed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PixelFormat:
    name: str
    dtype: np.dtype
    channels: int | None  # 1: H x W; 3: H x W x 3; None: any shape (float32 planes)

    def check(self, image: object) -> np.ndarray:
        """`image` if it is an array of this format, else a ValueError saying what is wrong."""
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
        self.check_layout(image.dtype, image.shape)
        return image

    def check_layout(self, dtype: np.dtype | str, shape: tuple[int, ...]) -> None:
        """A ValueError unless an image of `dtype` and `shape` is of this format (the wire
        decoder checks a header's layout with it before any payload is touched)."""
        if np.dtype(dtype) != self.dtype:
            raise ValueError(f"{self.name} image must be {self.dtype}, got {np.dtype(dtype)}")
        if self.channels == 1 and len(shape) != 2:
            raise ValueError(f"{self.name} image must be H x W, got shape {tuple(shape)}")
        if self.channels == 3 and (len(shape) != 3 or shape[2] != 3):
            raise ValueError(f"{self.name} image must be H x W x 3, got shape {tuple(shape)}")


PIXEL_FORMATS: dict[str, PixelFormat] = {
    f.name: f
    for f in (
        PixelFormat("gray8", np.dtype(np.uint8), 1),
        PixelFormat("bgr8", np.dtype(np.uint8), 3),
        PixelFormat("rgb8", np.dtype(np.uint8), 3),
        PixelFormat("gray16", np.dtype(np.uint16), 1),
        PixelFormat("float32", np.dtype(np.float32), None),
    )
}


def pixel_format(name: str, supported: Collection[str] = PIXEL_FORMATS) -> PixelFormat:
    """The format called `name`, or a ValueError naming the `supported` ones."""
    if name not in supported:
        raise ValueError(f"unsupported pixel format {name!r:.40}; supported: {', '.join(supported)}")
    return PIXEL_FORMATS[name]
