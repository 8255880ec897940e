"""What the render stage shows: the input image, the model's output image (part `output`, e.g.
a denoiser's), or both side by side (`show: auto | input | output | side_by_side`)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from stream.frame import Frame
from stream.render.color import to_bgr

SHOW_MODES = ("auto", "input", "output", "side_by_side")
FONT = cv2.FONT_HERSHEY_SIMPLEX
NO_OUTPUT_TEXT = "no model output"


def output_image(frame: Frame, overlay: Frame | None) -> np.ndarray | None:
    """The model output image drawn with `frame` as a new BGR array of the frame's size, or None
    (no overlay, or no `output` part). ValueError if the part is not a uint8 image."""
    out = overlay.parts.get("output") if overlay is not None else None
    if out is None:
        return None
    if out.ndim == 2 or (out.ndim == 3 and out.shape[2] == 1):
        fmt = "gray8"
    else:  # a colour model answers in the channel order it was given
        fmt = frame.pixel_format if frame.pixel_format in ("rgb8", "bgr8") else "rgb8"
    bgr = to_bgr(out, fmt)
    h, w = frame.image.shape[:2]
    if bgr.shape[:2] != (h, w):
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    return bgr


def no_output(like: np.ndarray) -> np.ndarray:
    """The right half of a side-by-side view while there is no model output: the input dimmed
    under a "no model output" note (so the video keeps one size)."""
    canvas = like // 3
    h = canvas.shape[0]
    scale = min(max(h / 1080 * 0.9, 0.4), 1.8)
    thick = max(1, round(scale * 2))
    (tw, th), _ = cv2.getTextSize(NO_OUTPUT_TEXT, FONT, scale, thick)
    origin = (max((canvas.shape[1] - tw) // 2, 0), (h + th) // 2)
    cv2.putText(canvas, NO_OUTPUT_TEXT, origin, FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return canvas


class ImageView:
    """Chooses the image to draw on for `show` and composes the side-by-side view.

    auto: the output image where the frame has one, else the input; input: always the input;
    output: the output image (the input where there is none, counted `frames_without_output`);
    side_by_side: the input (with the overlay) on the left, the output on the right. A malformed
    output part is counted as `bad_output_image` and treated as absent.
    """

    def __init__(self, show: str, count: Callable[[str], None]) -> None:
        if show not in SHOW_MODES:
            raise ValueError(f"show must be one of {', '.join(SHOW_MODES)}, got {show!r}")
        self.show = show
        self.count = count

    def _output(self, frame: Frame, overlay: Frame | None) -> np.ndarray | None:
        try:
            return output_image(frame, overlay)
        except ValueError:
            self.count("bad_output_image")
            return None

    def base(self, frame: Frame, overlay: Frame | None) -> np.ndarray:
        """A new BGR canvas: the image the overlay is drawn on."""
        if self.show in ("auto", "output"):
            out = self._output(frame, overlay)
            if out is not None:
                return out
            if self.show == "output":
                self.count("frames_without_output")
        return to_bgr(frame.image, frame.pixel_format)

    def compose(
        self,
        canvas: np.ndarray,
        frame: Frame,
        overlay: Frame | None,
        decorate: Callable[[np.ndarray], None],
    ) -> np.ndarray:
        """side_by_side: [canvas | output image, `decorate`d]; otherwise `canvas` itself."""
        if self.show != "side_by_side":
            return canvas
        out = self._output(frame, overlay)
        if out is None:
            self.count("frames_without_output")
            out = no_output(to_bgr(frame.image, frame.pixel_format))
        else:
            decorate(out)
        return np.ascontiguousarray(np.hstack((canvas, out)))
