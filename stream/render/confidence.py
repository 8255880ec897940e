"""ConfidenceAnnotator: a heat-map of the model's per-pixel confidence blended over the image.

The `confidence` part is uint8 (0..255 = confidence 0..1, see docs/protocol.md). Low confidence
is drawn hot (red/yellow), high confidence cool (blue), through `colormap` (an OpenCV colormap,
reversed so that doubt stands out), at `opacity`.
"""

from __future__ import annotations

import cv2
import numpy as np

from stream.render.canvas import check_canvas, owned_copy


def heat_colors(colormap: int) -> np.ndarray:
    """256 x 1 x 3 BGR: the colour of confidence value v (0..255), low values hot."""
    ramp = np.arange(255, -1, -1, dtype=np.uint8).reshape(256, 1)  # reversed: 0 -> hot end
    return cv2.applyColorMap(ramp, colormap)


class ConfidenceAnnotator:
    """Blend a heat-map of `confidence` over the image, optionally only where `where` != 0."""

    def __init__(self, opacity: float = 0.45, colormap: int = cv2.COLORMAP_JET) -> None:
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be in [0, 1], got {opacity}")
        self.opacity = float(opacity)
        self.colors = heat_colors(colormap)  # for the legend's colour bar too
        self._lut = np.ascontiguousarray(self.colors.reshape(1, 256, 3))

    def annotate(
        self, image: np.ndarray, confidence: np.ndarray, where: np.ndarray | None = None
    ) -> np.ndarray:
        """Return a new image: `image` (BGR, untouched) with the heat-map drawn."""
        canvas = owned_copy(image)
        self.draw(canvas, confidence, where)
        return canvas

    def draw(
        self, canvas: np.ndarray, confidence: np.ndarray, where: np.ndarray | None = None
    ) -> None:
        """Draw into `canvas` (BGR, owned) in place; `where`: uint8/bool HxW, draw where != 0."""
        check_canvas(canvas)
        if (
            not isinstance(confidence, np.ndarray)
            or confidence.dtype != np.uint8
            or confidence.shape != canvas.shape[:2]
        ):
            got = (
                f"{confidence.dtype} {confidence.shape}"
                if isinstance(confidence, np.ndarray)
                else type(confidence).__name__
            )
            raise ValueError(f"confidence must be uint8 {canvas.shape[:2]}, got {got}")
        if self.opacity == 0.0:
            return
        heat = cv2.LUT(cv2.merge([confidence] * 3), self._lut)
        blended = cv2.addWeighted(canvas, 1.0 - self.opacity, heat, self.opacity, 0.0)
        if where is None:
            canvas[...] = blended
        else:
            if where.shape != canvas.shape[:2]:
                raise ValueError(f"where must be {canvas.shape[:2]}, got {where.shape}")
            cv2.copyTo(blended, where.astype(np.uint8, copy=False), canvas)
