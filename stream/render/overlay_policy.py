"""Where and whether model output may be drawn on a frame.

`OverlayPolicy.decide` looks at the displayed frame and the overlay's frame and says, per frame:

- shown, with the boolean mask of the pixels model output may touch: inside the imaging region
  (`frame.meta["roi"]`, see stream.roi.region) and not a colour pixel (colour Doppler: chroma
  max(B,G,R) - min(B,G,R) above `chroma_level`, grown by one pixel; a grey image has none; an
  image whose region is mostly colour (sampled every 4th pixel each way) - endoscopy - is a
  colour image, not flow, and keeps all);
- or suppressed, with a reason and the HUD text:
  `ood` (the infer stage's `meta["applicability"]["applicable"]` is false),
  `no_roi` (a region is expected, `meta["roi"]` is null, e.g. the detector warming up, or the
  region does not cover a pixel of the image), `bad_roi` (a malformed `roi` value).

A frame whose meta has no `roi` key (the source makes no claim, `roi: none`) may be drawn on
everywhere except colour pixels. `ClippedOverlay` does the drawing: whatever the annotators do,
pixels outside the allowed mask are restored from the image under the overlay, and the changed
pixels outside it are counted afterwards (`pixels_outside_roi`: 0 by construction, checked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from stream.frame import Frame
from stream.roi.region import Absent, MaskCache, region_from_meta

COLOR_IMAGE_FRACTION = 0.5  # more colour than this in the region: a colour image, not flow


@dataclass(frozen=True)
class OverlayDecision:
    """`allowed` is None when every pixel may be drawn on; `reason` and `message` when hidden."""

    shown: bool
    allowed: np.ndarray | None = None
    reason: str = ""
    message: str = ""


def applicability_message(value: Any) -> str | None:
    """The HUD text when `meta["applicability"]` says not applicable; None otherwise."""
    if not isinstance(value, dict) or value.get("applicable") is not False:
        return None
    score, threshold = value.get("score"), value.get("threshold")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (score, threshold)):
        return f"model not applicable to this image (score {score:.2f} > {threshold:.2f})"
    return "model not applicable to this image"


def color_pixels(image: np.ndarray, chroma_level: int, grow: bool = True) -> np.ndarray | None:
    """uint8 HxW, 1 where BGR `image` is coloured (grown by one pixel); None if none."""
    b, g, r = cv2.split(image)
    chroma = cv2.subtract(cv2.max(cv2.max(b, g), r), cv2.min(cv2.min(b, g), r))
    _, colored = cv2.threshold(chroma, chroma_level, 1, cv2.THRESH_BINARY)
    if not cv2.countNonZero(colored):
        return None
    return cv2.dilate(colored, np.ones((3, 3), np.uint8)) if grow else colored


class OverlayPolicy:
    """Decides per frame (see the module doc). Keeps the region's pixel mask between frames."""

    def __init__(self, chroma_level: int = 40) -> None:
        if not 0 <= chroma_level <= 255:
            raise ValueError(f"chroma_level must be in [0, 255], got {chroma_level}")
        self.chroma_level = chroma_level
        self.masks = MaskCache()

    def decide(
        self, image: np.ndarray, frame: Frame, overlay: Frame, grey: bool
    ) -> OverlayDecision:
        """Decide for BGR `image` (the displayed `frame`) with `overlay`'s output; `grey` when
        the frame's pixels are monochrome (no colour pixels to look for)."""
        message = applicability_message(overlay.meta.get("applicability"))
        if message is not None:
            return OverlayDecision(False, reason="ood", message=message)
        try:
            region = region_from_meta(frame.meta)
        except ValueError:
            return OverlayDecision(False, reason="bad_roi", message="imaging region unreadable")
        if region is None:
            return OverlayDecision(False, reason="no_roi", message="no imaging region yet")
        h, w = image.shape[:2]
        inside = None if isinstance(region, Absent) else self.masks.get(region, h, w)
        if inside is not None and not inside.any():
            return OverlayDecision(
                False, reason="no_roi", message="imaging region outside the image"
            )
        colored = None
        if not grey and not self._color_image(image, inside):
            colored = color_pixels(image, self.chroma_level)
        if colored is None:
            return OverlayDecision(True, allowed=inside)
        free = colored == 0
        return OverlayDecision(True, allowed=free if inside is None else free & inside)

    def _color_image(self, image: np.ndarray, inside: np.ndarray | None) -> bool:
        """True when most of the region is colour (every 4th pixel each way, cheaply): a colour
        picture such as endoscopy, where colour is not flow and is drawn over."""
        sub = image[::4, ::4]
        colored = color_pixels(np.ascontiguousarray(sub), self.chroma_level, grow=False)
        if colored is None:
            return False
        if inside is None:
            return cv2.countNonZero(colored) > COLOR_IMAGE_FRACTION * colored.size
        region = inside[::4, ::4]
        n = int(np.count_nonzero(region))
        return n > 0 and bool(
            np.count_nonzero(colored.view(bool) & region) > COLOR_IMAGE_FRACTION * n
        )


class ClippedOverlay:
    """Draws model output through an allowed-pixel mask and checks the result."""

    def __init__(self) -> None:
        self.pixels_clipped = 0  # drawn outside the mask by the annotators, then restored
        self.pixels_outside = 0  # changed outside the mask after restoring: must stay 0

    def clip_labels(self, mask: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        """The label map with labels outside `allowed` set to background (0)."""
        if allowed is None or mask.shape != allowed.shape:
            return mask
        out = np.zeros_like(mask)
        cv2.copyTo(mask, allowed.view(np.uint8), out)
        return out

    def draw(
        self, canvas: np.ndarray, allowed: np.ndarray | None, draw: Callable[[np.ndarray], None]
    ) -> tuple[int, int]:
        """Run `draw(canvas)`, then restore every pixel outside `allowed` (bool HxW, None: all
        allowed). Returns (pixels restored, pixels still changed outside after restoring)."""
        if allowed is None:
            draw(canvas)
            return 0, 0
        base = canvas.copy()
        draw(canvas)
        outside = (~allowed).view(np.uint8)
        clipped = _count_changed(canvas, base, outside)
        still = 0
        if clipped:
            cv2.copyTo(base, outside, canvas)
            still = _count_changed(canvas, base, outside)
        self.pixels_clipped += clipped
        self.pixels_outside += still
        return clipped, still


def _count_changed(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> int:
    """How many pixels of `where` (uint8 HxW) differ between BGR images `a` and `b`."""
    if cv2.norm(a, b, cv2.NORM_INF, mask=where) == 0:  # the common case, cheaply
        return 0
    return int(cv2.countNonZero(_changed(a, b) & where))


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 HxW: 1 where BGR images `a` and `b` differ in any channel."""
    diff = cv2.transform(cv2.absdiff(a, b), np.ones((1, 3), np.float32))  # channel sum, saturated
    return cv2.threshold(diff, 0, 1, cv2.THRESH_BINARY)[1]
