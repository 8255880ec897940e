"""MaskAnnotator: translucent fill and contour for each label of a segmentation label map."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from stream.render.annotator import Annotator, check_opacity
from stream.render.color import BGR, check_palette, label_color, palette_lut


class MaskAnnotator(Annotator):
    """Blend each drawn label's colour over its pixels and outline it.

    Work is confined to the bounding box of the drawn labels, and colour is written only where
    the mask holds a drawn label: a mask that is all background costs one bounding-box scan.
    An instance keeps scratch buffers between calls: use one per thread.
    """

    def __init__(
        self,
        colors: Sequence[BGR] | None = None,
        opacity: float = 0.4,
        contour_thickness: int = 1,
        skip_labels: Iterable[int] = (0,),
    ) -> None:
        self.opacity = check_opacity(opacity)
        if contour_thickness < 0:
            raise ValueError(f"contour_thickness must be >= 0, got {contour_thickness}")
        self.palette = check_palette(colors)
        self.contour_thickness = int(contour_thickness)
        self.skip_labels = frozenset(int(v) for v in skip_labels)
        lut = palette_lut(self.palette)  # three 1-channel LUTs + merge beat one 3-channel LUT
        self._channel_luts = [np.ascontiguousarray(lut[:, :, c]) for c in range(3)]
        # Non-zero where a label value is drawn, 0 where it is skipped.
        self._drawn_lut = np.array(
            [0 if v in self.skip_labels else 1 for v in range(256)], dtype=np.uint8
        )
        # Reused for the per-frame temporaries: allocating and freeing several MB per frame
        # costs more than the drawing (page faults on fresh memory).
        self._scratch = np.empty(0, np.uint8)

    def paint(self, canvas: np.ndarray, mask: np.ndarray) -> None:
        """Draw `mask` (uint8 label map, same HxW) into `canvas`, a BGR array you own, in place."""
        if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
            got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask)
            raise ValueError(f"mask must be a uint8 HxW label map, got {got}")
        if mask.shape != canvas.shape[:2]:
            raise ValueError(
                f"mask shape {mask.shape} does not match image shape {canvas.shape[:2]}"
            )
        if not mask.flags.c_contiguous:
            mask = np.ascontiguousarray(mask)
        only_background_skipped = self.skip_labels == {0}
        if only_background_skipped:
            x, y, w, h = cv2.boundingRect(mask)  # bounding box of the non-zero pixels
        else:
            x, y, w, h = cv2.boundingRect(cv2.LUT(mask, self._drawn_lut))
        if w == 0 or h == 0:
            return
        roi_mask = mask[y : y + h, x : x + w]
        roi = canvas[y : y + h, x : x + w]
        if self.opacity > 0.0:
            drawn = roi_mask if only_background_skipped else cv2.LUT(roi_mask, self._drawn_lut)
            planes, color = self._scratch_views(h, w)
            for plane, lut in zip(planes, self._channel_luts, strict=True):
                cv2.LUT(roi_mask, lut, dst=plane)
            cv2.merge(planes, dst=color)
            cv2.addWeighted(roi, 1.0 - self.opacity, color, self.opacity, 0.0, dst=color)
            # OpenCV writes through `roi`, a strided view of the canvas, where `drawn` != 0.
            cv2.copyTo(color, drawn, roi)
        if self.contour_thickness > 0:
            self._draw_contours(canvas, roi_mask, (x, y))

    def _scratch_views(self, h: int, w: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Three HxW planes and one HxWx3 image, contiguous views into the reused scratch."""
        n = h * w
        if self._scratch.size < 6 * n:
            self._scratch = np.empty(6 * n, np.uint8)
        planes = [self._scratch[i * n : (i + 1) * n].reshape(h, w) for i in range(3)]
        return planes, self._scratch[3 * n : 6 * n].reshape(h, w, 3)

    def _draw_contours(
        self, canvas: np.ndarray, roi_mask: np.ndarray, offset: tuple[int, int]
    ) -> None:
        counts = cv2.calcHist([roi_mask], [0], None, [256], [0, 256]).ravel()
        for label in np.flatnonzero(counts):
            if int(label) in self.skip_labels:
                continue
            binary = cv2.compare(roi_mask, int(label), cv2.CMP_EQ)  # type: ignore[call-overload]  # cv2 takes a scalar; its stub says arrays only
            contours, _ = cv2.findContours(
                binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE, offset=offset
            )
            cv2.drawContours(
                canvas, contours, -1, label_color(self.palette, int(label)), self.contour_thickness
            )
