"""The HUD says when the overlay on a frame was computed for an older frame."""

from __future__ import annotations

import numpy as np

from stream.frame import Frame
from stream.render.hud import HudAnnotator, HudData, hud_lines
from stream.stages.render import overlay_age_ms


def frame(seq: int, capture_ms: float, meta: dict | None = None) -> Frame:
    t = int(capture_ms * 1e6)
    return Frame("s", seq, t, t + 50_000_000, np.zeros((240, 320), np.uint8), meta=meta or {})


def test_overlay_age_from_passthrough_and_reused_results() -> None:
    now = frame(10, 1000.0)
    assert overlay_age_ms(now, None) is None
    assert overlay_age_ms(now, now) is None  # synchronized, computed for this frame
    assert overlay_age_ms(now, frame(8, 933.0)) == 67.0  # passthrough: an older frame's mask
    reused = frame(11, 1033.0, {"inference": {"reused": True, "age_ms": 33.3, "result_seq": 10}})
    assert overlay_age_ms(reused, reused) == 33.3  # the infer stage skipped and reused
    bogus = frame(12, 1066.0, {"inference": {"reused": True, "age_ms": "old"}})
    assert overlay_age_ms(bogus, bogus) is None


def test_hud_shows_the_age_line_only_when_the_overlay_is_older() -> None:
    assert not any("earlier" in text for text, _ in hud_lines(HudData(seq=1)))
    assert not any("earlier" in text for text, _ in hud_lines(HudData(seq=1, overlay_age_ms=0.0)))
    lines = hud_lines(HudData(seq=1, overlay_age_ms=66.7))
    assert lines[-1][0] == "overlay from 67 ms earlier"
    hud = HudAnnotator()
    img = np.zeros((480, 640, 3), np.uint8)
    plain = hud.annotate(img, HudData(seq=1))
    aged = hud.annotate(img, HudData(seq=1, overlay_age_ms=66.7))
    assert not np.array_equal(plain, aged)
