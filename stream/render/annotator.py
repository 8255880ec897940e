"""Annotator: the base every overlay annotator shares (the supervision style).

A subclass takes its style in the constructor and implements `paint(canvas, ...)`, which draws
in place without checking the canvas. The base gives it, with `paint`'s own arguments:
`annotate(image, ...)`, a new BGR image (one checked copy; `image`, e.g. a read-only frame from
ZeroMQ, is never touched), and `draw(canvas, ...)`, which checks once that `canvas` can be drawn
into (check_canvas) and paints it. A renderer that composes several annotators on one canvas it
made checks it once per frame and calls their `paint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ParamSpec, Protocol

import numpy as np

from stream.render.canvas import check_canvas, owned_copy
from stream.render.color import BGR, check_palette

P = ParamSpec("P")


class Paints(Protocol[P]):
    def paint(self, canvas: np.ndarray, /, *args: P.args, **kwargs: P.kwargs) -> None: ...


class Annotator:
    """Base of the annotators (see the module doc)."""

    def annotate(
        self: Paints[P], image: np.ndarray, /, *args: P.args, **kwargs: P.kwargs
    ) -> np.ndarray:
        """Return a new image: `image` (BGR, untouched) with the annotation drawn."""
        canvas = owned_copy(image)
        self.paint(canvas, *args, **kwargs)
        return canvas

    def draw(self: Paints[P], canvas: np.ndarray, /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Draw in place into `canvas`, a BGR array you own (writable, C-contiguous)."""
        check_canvas(canvas)
        self.paint(canvas, *args, **kwargs)


def check_text_scale(text_scale: float | None) -> float | None:
    """`text_scale`: None (fitted to the frame) or > 0, else ValueError."""
    if text_scale is not None and text_scale <= 0:
        raise ValueError(f"text_scale must be > 0, got {text_scale}")
    return text_scale


def check_opacity(opacity: float) -> float:
    """`opacity` as a float in [0, 1], else ValueError."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    return float(opacity)


def check_margin(margin: int) -> int:
    """`margin` (pixels) as an int >= 0, else ValueError."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return int(margin)


class StrokeAnnotator(Annotator):
    """An annotator of lines `thickness` wide in the colours of a palette (by label or id)."""

    def __init__(self, colors: Sequence[BGR] | None = None, thickness: int = 2) -> None:
        if thickness < 1:
            raise ValueError(f"thickness must be >= 1, got {thickness}")
        self.palette = check_palette(colors)
        self.thickness = int(thickness)
