"""ConfidenceAnnotator: a heat-map of the model's per-pixel confidence blended over the image.

The `confidence` part is uint8 (0..255 = confidence 0..1, see docs/protocol.md). Low confidence
is drawn hot (red/yellow), high confidence cool (blue), through `colormap` (an OpenCV colormap,
reversed so that doubt stands out). The heat-map is blended with weight
`opacity x (1 - confidence)`: where the model is sure the image stays as it is, where it doubts
the heat shows, so the map never hides the anatomy it explains.
"""

from __future__ import annotations

import cv2
import numpy as np

from stream.render.annotator import Annotator, check_opacity


def heat_colors(colormap: int) -> np.ndarray:
    """256 x 1 x 3 BGR: the colour of confidence value v (0..255), low values hot."""
    ramp = np.arange(255, -1, -1, dtype=np.uint8).reshape(256, 1)  # reversed: 0 -> hot end
    return cv2.applyColorMap(ramp, colormap)


class ConfidenceAnnotator(Annotator):
    """Blend a heat-map of `confidence` over the image, optionally only where `where` != 0.

    An instance keeps scratch buffers between calls: use one per thread."""

    def __init__(self, opacity: float = 0.7, colormap: int = cv2.COLORMAP_JET) -> None:
        self.opacity = check_opacity(opacity)
        self.colors = heat_colors(colormap)  # for the legend's colour bar too
        doubt = 1.0 - np.arange(256) / 255.0
        self._weights = np.rint(255 * self.opacity * doubt).astype(np.uint8).reshape(1, 256)
        empty = np.empty((0, 0, 3), np.uint8)
        self._scratch: tuple[np.ndarray, np.ndarray, np.ndarray] = (empty, empty[..., 0], empty)

    def paint(
        self, canvas: np.ndarray, confidence: np.ndarray, where: np.ndarray | None = None
    ) -> None:
        """Draw into `canvas` (BGR, owned) in place; `where`: uint8/bool HxW, draw where != 0."""
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
        heat, w1, w3 = self._buffers(confidence.shape)
        cv2.applyColorMap(confidence, self.colors, dst=heat)
        cv2.LUT(confidence, self._weights, dst=w1)  # 255 x opacity x (1 - confidence)
        cv2.merge([w1, w1, w1], dst=w3)
        cv2.multiply(heat, w3, dst=heat, scale=1 / 255)  # heat x weight
        cv2.bitwise_not(w3, dst=w3)
        cv2.multiply(canvas, w3, dst=w3, scale=1 / 255)  # image x (1 - weight)
        if where is None:
            cv2.add(heat, w3, dst=canvas)
        else:
            if where.shape != canvas.shape[:2]:
                raise ValueError(f"where must be {canvas.shape[:2]}, got {where.shape}")
            cv2.add(heat, w3, dst=heat)
            cv2.copyTo(heat, where.astype(np.uint8, copy=False), canvas)

    def _buffers(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scratch arrays reused between frames (fresh memory per frame costs page faults)."""
        if self._scratch[0].shape[:2] != shape:
            h, w = shape[:2]
            self._scratch = (
                np.empty((h, w, 3), np.uint8),
                np.empty((h, w), np.uint8),
                np.empty((h, w, 3), np.uint8),
            )
        return self._scratch
