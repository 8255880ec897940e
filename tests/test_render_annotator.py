"""The annotator base: `annotate` draws on one checked copy, `draw` checks the canvas, and the
render stage checks its canvas once per frame however many annotators paint it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import stream.render.annotator as annotator_module
import stream.stages.render as render_module
from stream.frame import Box
from stream.render.annotator import Annotator
from stream.render.boxes import BoxAnnotator, LabelAnnotator
from stream.render.confidence import ConfidenceAnnotator
from stream.render.hud import HudAnnotator, HudData
from stream.render.legend import LegendAnnotator, NoticeAnnotator
from stream.render.mask import MaskAnnotator
from stream.render.orientation import OrientationAnnotator
from stream.render.pieces import GeometryPieces
from stream.render.scale import ScaleBarAnnotator, SpacingNoteAnnotator
from stream.render.tracks import TipAnnotator, TrailAnnotator

from .test_overlay_policy import ROI, _frame, _renderer

H, W = 120, 160
BOX = Box(20, 20, 90, 70, 1, 0.8)
MASK = np.zeros((H, W), np.uint8)
MASK[30:60, 40:90] = 1
CASES: list[tuple[Annotator, tuple[Any, ...]]] = [
    (BoxAnnotator(), ([BOX],)),
    (LabelAnnotator(), ([BOX], ["bg", "lesion"], [3])),
    (ConfidenceAnnotator(), (np.zeros((H, W), np.uint8),)),
    (HudAnnotator(), (HudData(seq=7),)),
    (LegendAnnotator(), (["bg", "lesion"],)),
    (NoticeAnnotator(), ("Research use only",)),
    (MaskAnnotator(), (MASK,)),
    (OrientationAnnotator(), (("L", "P"),)),
    (ScaleBarAnnotator(), ((0.25, 0.25),)),
    (SpacingNoteAnnotator(), ()),
    (TrailAnnotator(), ({3: [(20.0, 20.0), (60.0, 50.0)]},)),
    (TipAnnotator(), ([BOX],)),
    (GeometryPieces(), ({"pixel_spacing_mm": [0.25, 0.25], "patient_orientation": ["L", "P"]},)),
]


@pytest.mark.parametrize(("annotator", "args"), CASES, ids=lambda c: type(c).__name__)
def test_annotate_copies_once_and_draw_refuses_a_canvas_it_cannot_draw_into(
    annotator: Annotator, args: tuple[Any, ...]
) -> None:
    image = np.full((H, W, 3), 90, np.uint8)
    image.flags.writeable = False  # frames from ZeroMQ are read-only views
    out = annotator.annotate(image, *args)  # type: ignore[misc]
    assert (image == 90).all() and not np.shares_memory(out, image)
    assert (out != 90).any(), "nothing drawn"
    canvas = image.copy()
    annotator.draw(canvas, *args)  # type: ignore[misc]
    assert np.array_equal(canvas, out)
    with pytest.raises(ValueError, match="read-only"):
        annotator.draw(image, *args)  # type: ignore[misc]
    with pytest.raises(ValueError, match="C-contiguous"):
        annotator.draw(np.zeros((H, 2 * W, 3), np.uint8)[:, ::2], *args)  # type: ignore[misc]
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        annotator.annotate(image[..., 0], *args)  # type: ignore[misc]


def test_the_render_stage_checks_its_canvas_once_per_frame(monkeypatch: Any) -> None:
    checked: list[tuple[int, ...]] = []

    def counting(canvas: np.ndarray) -> None:
        checked.append(canvas.shape)

    monkeypatch.setattr(annotator_module, "check_canvas", counting)
    monkeypatch.setattr(render_module, "check_canvas", counting)
    renderer, sink, stats = _renderer()  # HUD on
    grey = np.full((240, 320), 90, np.uint8)
    mask = np.zeros((240, 320), np.uint8)
    mask[80:120, 80:160] = 1
    frame = _frame(grey, "gray8", {"roi": ROI.meta(), "pixel_spacing_mm": [0.3, 0.3]}, mask)
    frame.annotations.boxes = [Box(60, 60, 200, 150, 1, 0.9)]
    renderer.render(frame, frame, None)
    renderer.render(frame, frame, None)
    assert stats.counters["overlay_shown"] == 2 and len(sink.images) == 2
    assert checked == [(240, 320, 3)] * 2  # mask, boxes, labels, legend, scale bar, HUD: one check
