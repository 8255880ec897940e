"""What the render stage shows about the model besides its labels: the confidence heat-map, the
class legend, the model card's notice, and the card facts the browser viewer shows.

The infer stage sends them with each frame (docs/protocol.md): the `confidence` part and
`meta.model_card` (intended_use, training_data, notice); labels are the frame's annotations.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from stream.frame import Frame
from stream.render.color import BGR, DETECTION_PALETTE
from stream.render.confidence import ConfidenceAnnotator
from stream.render.legend import LegendAnnotator, NoticeAnnotator

OverlayKind = Literal["labels", "confidence", "both"]
OVERLAYS = ("labels", "confidence", "both")
CARD_KEYS = ("intended_use", "training_data", "notice")


def hex_color(bgr: BGR) -> str:
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


class ModelExplainer:
    """Draws the confidence heat-map (per `overlay`), the legend and the notice; remembers the
    newest card facts and applicability for the viewer (`live`)."""

    def __init__(self, overlay: OverlayKind = "labels") -> None:
        if overlay not in OVERLAYS:
            raise ValueError(f"overlay must be one of {', '.join(OVERLAYS)}, got {overlay!r}")
        self.overlay = overlay
        self.heat = ConfidenceAnnotator()
        self.legend = LegendAnnotator()  # mask labels: value 0 (background) not listed
        # detection: every label is a class, in the box colours (stream.stages.render)
        self.box_legend = LegendAnnotator(DETECTION_PALETTE, skip_labels=())
        self.for_boxes = False  # the labels are a detector's (box_legend) rather than a mask's
        self.notice = NoticeAnnotator()
        self.labels: list[str] = []
        self.card: dict[str, str] = {}
        self.applicability: dict[str, Any] | None = None

    @property
    def draws_labels(self) -> bool:
        return self.overlay in ("labels", "both")

    @property
    def draws_confidence(self) -> bool:
        return self.overlay in ("confidence", "both")

    def note(self, overlay: Frame) -> None:
        """Take the labels, card facts and applicability that came with `overlay`. The legend
        lists a mask's labels (background skipped) or a detector's (all); a classifier's top-k
        are in the HUD instead, so it has none."""
        ann = overlay.annotations
        if ann.labels and "mask" in overlay.parts:
            self.labels, self.for_boxes = list(ann.labels), False
        elif ann.labels and ann.boxes:
            self.labels, self.for_boxes = list(ann.labels), True
        elif ann.classes:
            self.labels = []
        card = overlay.meta.get("model_card")
        if isinstance(card, dict):
            self.card = {k: card[k] for k in CARD_KEYS if isinstance(card.get(k), str)}
        gate = overlay.meta.get("applicability")
        self.applicability = gate if isinstance(gate, dict) else None

    def draw_confidence(
        self, canvas: np.ndarray, overlay: Frame, where: np.ndarray | None = None
    ) -> bool:
        """Paint the heat-map of `overlay`'s confidence part into `canvas` (checked by the
        caller) if `overlay` asks for it; False if the part is malformed (wrong dtype or size:
        the caller counts it)."""
        confidence = overlay.parts.get("confidence")
        if not self.draws_confidence or confidence is None:
            return True
        try:
            self.heat.paint(canvas, confidence, where)
        except ValueError:
            return False
        return True

    def draw_panels(self, canvas: np.ndarray) -> None:
        """Paint the legend (top-right) and the card's notice (bottom-left) into `canvas`
        (checked by the caller)."""
        bar = self.heat.colors if self.draws_confidence else None
        if self.labels:
            (self.box_legend if self.for_boxes else self.legend).paint(canvas, self.labels, bar)
        self.notice.paint(canvas, self.card.get("notice", ""))

    def live(self) -> dict[str, Any]:
        """For the viewer: labels with their colours, the card facts, the newest applicability."""
        live: dict[str, Any] = {
            "labels": [
                {"name": n, "color": hex_color(c)}
                for n, c in (self.box_legend if self.for_boxes else self.legend).items(self.labels)
            ],
            **self.card,
            "overlay": self.overlay,
            "applicability": self.applicability,
        }
        if self.draws_confidence:  # the heat-map's colours at confidence 0, 0.25, ..., 1
            stops = self.heat.colors[[0, 64, 128, 191, 255], 0]
            live["confidence_colors"] = [hex_color((int(b), int(g), int(r))) for b, g, r in stops]
        return live
