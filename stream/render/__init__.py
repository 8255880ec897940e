"""Annotators that draw masks, boxes and the HUD onto a copy of a frame.

Each annotator (`stream.render.annotator.Annotator`) takes its style in the constructor and
offers `annotate(image, ...)`, which returns a new BGR image and never touches its input (frames
from ZeroMQ are read-only views), and `draw(canvas, ...)`, which draws in place into a canvas the
caller owns (e.g. the new array `to_bgr` returns), so a chain of annotators costs one copy, not
one per annotator; `paint(canvas, ...)` draws without checking the canvas again.
"""

from stream.render.boxes import BoxAnnotator, LabelAnnotator
from stream.render.color import DEFAULT_PALETTE, to_bgr
from stream.render.confidence import ConfidenceAnnotator
from stream.render.hud import HudAnnotator, HudData
from stream.render.legend import LegendAnnotator, NoticeAnnotator
from stream.render.mask import MaskAnnotator
from stream.render.orientation import OrientationAnnotator
from stream.render.scale import ScaleBarAnnotator

__all__ = [
    "DEFAULT_PALETTE",
    "BoxAnnotator",
    "ConfidenceAnnotator",
    "HudAnnotator",
    "HudData",
    "LabelAnnotator",
    "LegendAnnotator",
    "MaskAnnotator",
    "NoticeAnnotator",
    "OrientationAnnotator",
    "ScaleBarAnnotator",
    "to_bgr",
]
