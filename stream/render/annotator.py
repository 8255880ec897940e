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


class StrokeAnnotator(Annotator):
    """An annotator of lines `thickness` wide in the colours of a palette (by label or id)."""

    def __init__(self, colors: Sequence[BGR] | None = None, thickness: int = 2) -> None:
        if thickness < 1:
            raise ValueError(f"thickness must be >= 1, got {thickness}")
        self.palette = check_palette(colors)
        self.thickness = int(thickness)
