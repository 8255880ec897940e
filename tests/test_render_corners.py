"""Overlay pieces in each corner: inside the image, and the stale banner never over the HUD."""

from __future__ import annotations

import numpy as np
import pytest

from stream.render.hud import HudAnnotator, HudData
from stream.render.orientation import OrientationAnnotator
from stream.render.scale import SpacingNoteAnnotator

CORNERS = ["top-left", "top-right", "bottom-left", "bottom-right"]


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("corner", CORNERS)
@pytest.mark.parametrize(("h", "w"), [(256, 256), (1080, 1920)])
def test_the_stale_banner_keeps_clear_of_the_hud_in_any_corner(corner: str, h: int, w: int) -> None:
    lay = HudAnnotator(corner=corner).layout(h, w, HudData(seq=1, overlay_stale_ms=90.0))
    assert lay.banner is not None
    assert not overlap(lay.banner, lay.panel), (lay.banner, lay.panel)
    x0, y0, x1, y1 = lay.panel
    assert (x0 < w / 2) == corner.endswith("left") and (y0 < h / 2) == corner.startswith("top")


@pytest.mark.parametrize("corner", CORNERS)
def test_corner_pieces_stay_inside_the_image_with_their_margin(corner: str) -> None:
    for size in ((240, 320), (1080, 1920)):
        image = np.zeros((*size, 3), np.uint8)
        for out in (
            OrientationAnnotator(corner=corner).annotate(image, ("RA", "F")),
            SpacingNoteAnnotator(corner=corner).annotate(image),
        ):
            ys, xs = np.nonzero(out.any(axis=2))
            assert len(ys) and xs.min() >= 3 and ys.min() >= 3
            assert xs.max() <= size[1] - 4 and ys.max() <= size[0] - 4


def test_unknown_corners_are_refused() -> None:
    with pytest.raises(ValueError, match="corner must be one of"):
        HudAnnotator(corner="centre")
    with pytest.raises(ValueError, match="edges"):
        OrientationAnnotator(corner="middle")
