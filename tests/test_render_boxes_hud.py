"""BoxAnnotator, LabelAnnotator and HudAnnotator: pixels where expected, inputs untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.frame import Box
from stream.render import BoxAnnotator, HudAnnotator, HudData, LabelAnnotator

H, W = 240, 320
RED, GREEN = (0, 0, 255), (0, 255, 0)


def _gray(value: int = 90, h: int = H, w: int = W) -> np.ndarray:
    image = np.full((h, w, 3), value, np.uint8)
    image.flags.writeable = False
    return image


def test_box_outline_in_label_colour_and_nothing_else():
    image = _gray()
    out = BoxAnnotator(colors=[RED, GREEN], thickness=1).annotate(
        image, [Box(50, 40, 150, 120, 1, 0.9)]
    )
    assert np.all(image == 90)  # untouched
    changed = np.any(out != image, axis=2)
    expected = np.zeros((H, W), bool)
    expected[40, 50:151] = expected[120, 50:151] = True
    expected[40:121, 50] = expected[40:121, 150] = True
    np.testing.assert_array_equal(changed, expected)
    np.testing.assert_array_equal(out[40, 60], GREEN)


def test_boxes_outside_the_image_are_clipped_not_an_error():
    out = BoxAnnotator().annotate(_gray(), [Box(-1e6, -50, 1e6, 1e9, 3, 0.5)])
    assert out.shape == (H, W, 3)


def test_non_finite_box_is_a_clear_error():
    with pytest.raises(ValueError, match="finite"):
        BoxAnnotator().annotate(_gray(), [Box(math.nan, 0, 10, 10, 1, 0.5)])


def test_label_tag_sits_above_the_box_and_input_is_untouched():
    image = _gray()
    out = LabelAnnotator(colors=[RED, GREEN]).annotate(
        image, [Box(60, 100, 200, 200, 1, 0.87)], ["bg", "tool"]
    )
    assert np.all(image == 90)
    changed = np.any(out != image, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.max() < 100 and ys.min() > 70  # the tag's height is ~20 px at scale 0.5
    assert xs.min() == 60 and xs.max() < 200
    assert np.any(np.all(out == GREEN, axis=2))  # the tag is filled in the label colour


def test_label_tag_goes_inside_when_the_box_touches_the_top():
    out = LabelAnnotator().annotate(_gray(), [Box(10, 0, 100, 80, 1, 0.5)], ["bg", "tool"])
    ys, _ = np.nonzero(np.any(out != 90, axis=2))
    assert ys.min() == 0 and ys.max() < 40


def test_label_without_a_name_is_a_clear_error():
    with pytest.raises(ValueError, match="box label 5 has no name: 2 labels"):
        LabelAnnotator().annotate(_gray(), [Box(0, 0, 10, 10, 5, 0.5)], ["bg", "tool"])


def _hud(**kw) -> HudData:
    base = dict(
        seq=42,
        fps=30.0,
        latency_p50_ms=10.0,
        latency_p99_ms=20.0,
        budget_ms=33.0,
        budget_misses=0,
        drops=1,
        model="unet",
        backend="onnxruntime",
    )
    base.update(kw)
    return HudData(**base)


def test_hud_draws_only_in_its_top_left_panel():
    image = _gray(200, 1080, 1920)
    hud = HudAnnotator()
    data = _hud()
    out = hud.annotate(image, data)
    assert np.all(image == 200)
    x0, y0, x1, y1 = hud.layout(1080, 1920, data).panel
    assert (x0, y0) == (8, 8) and x1 < 1920 // 2 and y1 < 1080 // 2
    changed = np.any(out != image, axis=2)
    assert changed[y0:y1, x0:x1].mean() > 0.9  # translucent dark panel: nearly every pixel
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()
    assert out[y0 + 2, x1 - 2].max() < 200  # darkened, not replaced
    assert out[y0 + 2, x1 - 2].max() > 0


def test_hud_text_changes_with_the_data():
    hud = HudAnnotator()
    a = hud.annotate(_gray(), _hud(seq=1))
    b = hud.annotate(_gray(), _hud(seq=9999))
    assert not np.array_equal(a, b)


def test_budget_missed_adds_red_to_the_panel():
    hud = HudAnnotator()
    ok = hud.annotate(_gray(), _hud(latency_p99_ms=20.0))
    missed_data = _hud(latency_p99_ms=50.0)
    assert missed_data.budget_missed and not _hud().budget_missed
    missed = hud.annotate(_gray(), missed_data)

    def reddish(img: np.ndarray) -> int:
        b, g, r = (img[..., i].astype(int) for i in range(3))
        return int(np.sum((r > 150) & (g < 100) & (b < 100)))

    assert reddish(ok) == 0 and reddish(missed) > 50
    x0, y0, x1, y1 = hud.layout(H, W, missed_data).panel
    assert reddish(missed[y0:y1, x0:x1]) == reddish(missed)


def test_stale_banner_is_red_and_in_its_region_only():
    image = _gray(90, 1080, 1920)
    hud = HudAnnotator()
    fresh, stale_data = _hud(), _hud(overlay_stale_ms=123.0)
    lay = hud.layout(1080, 1920, stale_data)
    assert hud.layout(1080, 1920, fresh).banner is None and lay.banner is not None
    bx0, by0, bx1, by1 = lay.banner
    assert by1 < 1080 // 4 and abs((bx0 + bx1) / 2 - 1920 / 2) <= 1  # top, centred
    diff = np.any(hud.annotate(image, fresh) != hud.annotate(image, stale_data), axis=2)
    ys, xs = np.nonzero(diff)
    assert ys.min() >= by0 and ys.max() < by1 and xs.min() >= bx0 and xs.max() < bx1
    stale = hud.annotate(image, stale_data)
    np.testing.assert_array_equal(stale[by0 + 1, bx0 + 1], (0, 0, 200))
    assert "OVERLAY STALE (123 ms)" == lay.banner_line[0]


def test_stale_banner_moves_below_the_panel_on_narrow_images():
    hud = HudAnnotator()
    lay = hud.layout(256, 256, _hud(overlay_stale_ms=80.0))
    assert lay.banner is not None and lay.banner[1] >= lay.panel[3]


def test_unknown_values_show_as_dashes():
    hud = HudAnnotator()
    lay = hud.layout(H, W, HudData(seq=0))
    assert lay.lines[0][0] == "seq 0  fps -"
    assert not HudData(seq=0).budget_missed


def test_hud_on_a_tiny_image_does_not_crash():
    out = HudAnnotator().annotate(_gray(50, 20, 30), _hud(overlay_stale_ms=5.0))
    assert out.shape == (20, 30, 3)
