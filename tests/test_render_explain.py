"""Confidence heat-map, legend and notice annotators, and the render stage's explainer."""

from __future__ import annotations

import numpy as np
import pytest

from stream.frame import Annotations, Frame
from stream.render.color import DEFAULT_PALETTE
from stream.render.confidence import ConfidenceAnnotator
from stream.render.explain import ModelExplainer
from stream.render.legend import LegendAnnotator, NoticeAnnotator
from stream.render.mask import MaskAnnotator

LABELS = ["background", "anechoic", "lesion", "interface"]
NOTICE = "Research use only, not for diagnosis"


def _grey(h: int = 240, w: int = 320, v: int = 90) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def test_heat_map_is_hot_where_confidence_is_low_and_only_where_allowed() -> None:
    image = _grey()
    conf = np.zeros((240, 320), np.uint8)
    conf[:, 160:] = 255
    conf[:, 100:160] = 128
    where = np.zeros((240, 320), np.uint8)
    where[:200] = 1
    out = ConfidenceAnnotator(opacity=0.5).annotate(image, conf, where)
    assert (image == 90).all(), "annotate must not touch its input"
    low, mid = out[100, 50].astype(int), out[100, 130].astype(int)
    assert low[2] > low[0] + 60, low  # red where the model doubts
    assert abs(mid - 90).max() > 10 and abs(mid - 90).max() < abs(low - 90).max(), mid
    assert (out[:200, 160:] == 90).all(), "where the model is sure the image stays as it is"
    assert (out[220:] == 90).all(), "drawn outside `where`"
    with pytest.raises(ValueError, match="confidence must be uint8"):
        ConfidenceAnnotator().annotate(image, conf[:10])


def test_legend_shows_each_label_colour_and_name_not_background() -> None:
    legend = LegendAnnotator(corner="top-right")
    image = _grey()
    out = legend.annotate(image, LABELS)
    lay = legend.layout(240, 320, LABELS)
    assert len(lay.swatches) == 3 and [t for t, _ in lay.entries] == LABELS[1:]
    for (x0, y0, x1, y1), colour in lay.swatches:
        assert colour in DEFAULT_PALETTE[1:4]
        patch = out[y0:y1, x0:x1].reshape(-1, 3)
        assert (patch == colour).all(1).mean() > 0.9, (colour, patch[:3])
    px0, py0, px1, py1 = lay.panel
    assert px1 <= 320 and px0 > 160 and py0 < 20, lay.panel  # the top-right corner
    text = out[py0:py1, px0:px1].max(axis=2) > 200  # white names on the darkened panel
    assert text.sum() > 50
    assert (out[:, : px0 - 1] == 90).all(), "drawn outside its panel"


def test_legend_with_a_confidence_bar_runs_from_hot_to_cool() -> None:
    heat = ConfidenceAnnotator()
    legend = LegendAnnotator()
    out = legend.annotate(_grey(), LABELS, heat.colors)
    bar = legend.layout(240, 320, LABELS, confidence_bar=True).bar
    assert bar is not None
    x0, y0, x1, y1 = bar
    left, right = out[(y0 + y1) // 2, x0].astype(int), out[(y0 + y1) // 2, x1 - 1].astype(int)
    assert left[2] > left[0] and right[0] > right[2], (left, right)


def test_notice_is_drawn_in_its_corner_and_nothing_without_text() -> None:
    notice = NoticeAnnotator(corner="bottom-left")
    image = _grey()
    out = notice.annotate(image, NOTICE)
    (x0, y0, x1, y1), _, _, _ = notice.layout(240, 320, NOTICE)
    assert y1 <= 240 and y0 > 120 and x0 < 20
    box = out[y0:y1, x0:x1].astype(int)
    amber = (box[..., 2] > 150) & (box[..., 1] > 100) & (box[..., 0] < 80)
    assert amber.sum() > 30, "no amber text"
    assert (out[:y0] == 90).all()
    assert (notice.annotate(image, "") == image).all()


def _overlay_frame(mask: np.ndarray, conf: np.ndarray, applicable: bool = True) -> Frame:
    return Frame(
        "us",
        1,
        0,
        0,
        np.zeros(mask.shape, np.uint8),
        parts={"mask": mask, "confidence": conf},
        annotations=Annotations(model="us-seg", labels=LABELS),
        meta={
            "model_card": {"notice": NOTICE, "intended_use": "demo", "training_data": "phantom"},
            "applicability": {
                "score": 0.5 if applicable else 4.0,
                "threshold": 1.5,
                "applicable": applicable,
                "method": "input_stats",
            },
        },
    )


@pytest.mark.parametrize("overlay", ["labels", "confidence", "both"])
def test_explainer_draws_what_the_overlay_setting_asks(overlay: str) -> None:
    mask = np.zeros((240, 320), np.uint8)
    mask[60:120, 60:120] = 2
    conf = np.full((240, 320), 255, np.uint8)
    conf[150:200, 200:260] = 10
    frame = _overlay_frame(mask, conf)
    explain = ModelExplainer(overlay)  # type: ignore[arg-type]
    canvas = _grey()
    explain.note(frame)
    assert explain.draw_confidence(canvas, frame)
    if explain.draws_labels:
        MaskAnnotator().draw(canvas, mask)
    plain = canvas[30, 300]  # sure, no label
    heat_drawn = not (canvas[175, 230] == plain).all()  # doubt, no label
    label_drawn = not (canvas[90, 90] == plain).all()  # sure, labelled
    assert heat_drawn == (overlay != "labels") and label_drawn == (overlay != "confidence")
    explain.draw_panels(canvas)
    live = explain.live()
    assert live["notice"] == NOTICE and live["overlay"] == overlay
    assert [entry["name"] for entry in live["labels"]] == LABELS[1:]
    assert live["labels"][0]["color"] == "#0080ff"  # BGR (255, 128, 0)
    assert live["applicability"]["applicable"] is True
    if overlay == "labels":
        assert "confidence_colors" not in live
    else:  # hot (red) at confidence 0, cool (blue) at 1
        first, last = live["confidence_colors"][0], live["confidence_colors"][-1]
        assert int(first[1:3], 16) > int(first[5:7], 16) and int(last[5:7], 16) > int(last[1:3], 16)


def test_explainer_reports_a_malformed_confidence_part() -> None:
    mask = np.zeros((240, 320), np.uint8)
    frame = _overlay_frame(mask, np.zeros((10, 10), np.uint8))
    assert not ModelExplainer("both").draw_confidence(_grey(), frame)
    assert ModelExplainer("labels").draw_confidence(_grey(), frame)  # not drawn: not checked


def test_unknown_overlay_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="labels, confidence, both"):
        ModelExplainer("heat")  # type: ignore[arg-type]


class _Capture:
    """A sink that keeps what the render stage hands it."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.stats: dict = {}

    def write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        self.images.append(image_bgr)

    def update_stats(self, stats: dict) -> None:
        self.stats = stats

    def drops(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


@pytest.mark.parametrize("overlay", ["labels", "confidence"])
def test_render_stage_hands_the_sinks_legend_notice_and_the_chosen_overlay(overlay: str) -> None:
    from stream.clock import FakeClock
    from stream.config import load_config
    from stream.stages.base import StageRuntime
    from stream.stages.render import Renderer

    cfg = load_config(
        {
            "name": "t",
            "links": {"in": {"endpoint": "tcp://127.0.0.1:5999"}},
            "stages": [{"id": "render", "kind": "render", "input": "in", "hud": False, "overlay": overlay}],
        }
    )
    spec = cfg.stage("render")
    rt = StageRuntime(cfg, spec, clock=FakeClock(), stats_endpoint="")
    sink = _Capture()
    try:
        renderer = Renderer(rt, spec, [sink])  # type: ignore[arg-type, list-item]
        mask = np.zeros((240, 320), np.uint8)
        mask[60:120, 60:120] = 1
        conf = np.full((240, 320), 255, np.uint8)
        conf[150:200, 200:260] = 0
        frame = _overlay_frame(mask, conf)
        frame.image = np.full((240, 320), 90, np.uint8)
        # the whole image is the imaging region (frame.meta contract of the region of interest)
        frame.meta["roi"] = {"source": "config", "polygon": [[0, 0], [320, 0], [320, 240], [0, 240]]}
        renderer.render(frame, frame, None)
        renderer.publish_live(force=True)
    finally:
        rt.close()
    out = sink.images[0]
    legend = LegendAnnotator().layout(240, 320, LABELS, confidence_bar=overlay == "confidence")
    (x0, y0, x1, y1), colour = legend.swatches[0]
    assert (out[y0:y1, x0:x1].reshape(-1, 3) == colour).all(1).mean() > 0.9  # legend swatch
    (nx0, ny0, nx1, ny1), _, _, _ = NoticeAnnotator().layout(240, 320, NOTICE)
    box = out[ny0:ny1, nx0:nx1].astype(int)
    assert ((box[..., 2] > 150) & (box[..., 0] < 80)).sum() > 30  # the amber notice
    labelled, doubtful = out[90, 90].astype(int), out[175, 230].astype(int)
    assert (abs(labelled - 90).max() > 20) == (overlay == "labels")
    assert (abs(doubtful - 90).max() > 20) == (overlay == "confidence")
    card = sink.stats["model_card"]
    assert card["notice"] == NOTICE and card["applicability"]["applicable"] is True
