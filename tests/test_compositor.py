"""Compositor: layouts, titles, stale marks (pure image code, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.render.compositor import Compositor, Tile, stale_ages

MS = 1_000_000
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def _tile(i: int, h: int = 90, w: int = 120, capture_ms: float = 0.0) -> Tile:
    image = np.empty((h, w, 3), np.uint8)
    image[:] = COLOURS[i]
    image.flags.writeable = False  # frames from ZeroMQ are read-only views
    return Tile(f"s{i}", image, int(capture_ms * MS))


def _at(image: np.ndarray, y: int, x: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image[y, x])


def test_grid_puts_every_tile_in_its_own_cell_in_order() -> None:
    tiles = [_tile(i) for i in range(4)]
    out = Compositor("grid", gap=2, titles=False).annotate(tiles)
    assert out.shape == (2 * 90 + 2, 2 * 120 + 2, 3)
    centres = [(45, 60), (45, 182), (137, 60), (137, 182)]
    for i, (y, x) in enumerate(centres):
        assert _at(out, y, x) == COLOURS[i], i
    assert _at(out, 91, 60) == (0, 0, 0)  # the gap between rows


def test_grid_of_three_leaves_the_fourth_cell_empty_and_fits_smaller_tiles() -> None:
    tiles = [_tile(0), _tile(1, 45, 60), _tile(2)]
    out = Compositor("grid", gap=0, titles=False).annotate(tiles)
    assert out.shape == (180, 240, 3)
    # the 45 x 60 tile is scaled up to fill its 90 x 120 cell (same aspect ratio)
    assert _at(out, 5, 125) == COLOURS[1] and _at(out, 85, 235) == COLOURS[1]
    assert _at(out, 135, 180) == (0, 0, 0)


def test_side_by_side_scales_every_tile_to_the_tallest_keeping_aspect() -> None:
    tiles = [_tile(0, 100, 100), _tile(1, 50, 100)]
    out = Compositor("side_by_side", gap=4, titles=False).annotate(tiles)
    assert out.shape == (100, 100 + 4 + 200, 3)
    assert _at(out, 50, 50) == COLOURS[0] and _at(out, 50, 200) == COLOURS[1]


def test_pip_insets_the_others_into_the_first_tile() -> None:
    tiles = [_tile(0, 200, 300), _tile(1), _tile(2)]
    out = Compositor("pip", pip_scale=0.25, titles=False).annotate(tiles)
    assert out.shape == (200, 300, 3)
    assert _at(out, 100, 150) == COLOURS[0]  # the main tile's centre stays uncovered
    assert _at(out, 180, 270) == COLOURS[1]  # first inset: bottom right
    assert _at(out, 180, 30) == COLOURS[2]  # second: bottom left
    assert _at(out, 20, 270) == COLOURS[0]  # top right: free


def test_titles_name_each_stream_inside_its_own_tile() -> None:
    tiles = [_tile(0), _tile(1)]
    plain = Compositor("side_by_side", gap=0, titles=False).annotate(tiles)
    titled = Compositor("side_by_side", gap=0).annotate(tiles)
    changed = np.abs(titled.astype(int) - plain.astype(int)).max(axis=2) > 30
    ys, xs = np.nonzero(changed)
    assert len(ys) > 50
    assert ys.max() < 30  # a title strip at the top
    assert changed[:, 5:60].any() and changed[:, 125:180].any()  # one per tile
    assert not changed[:, 100:120].any()  # a short title stays left in its own tile


def test_a_tile_older_than_max_skew_is_marked_stale_with_its_age() -> None:
    tiles = [_tile(0, capture_ms=1000.0), _tile(1, capture_ms=1250.0), _tile(2, capture_ms=1180.0)]
    comp = Compositor("side_by_side", max_skew_ms=100.0, gap=0, titles=False)
    assert comp.stale(tiles) == {"s0": 250.0}
    out = comp.annotate(tiles)
    red = (out[..., 2] > 200) & (out[..., 0] < 80) & (out[..., 1] < 80)
    assert red[:, 0:120].sum() > 200  # frame + label on the stale tile
    assert not red[:, 120:].any()  # the current ones are not marked
    plain = Compositor("side_by_side", max_skew_ms=300.0, gap=0, titles=False).annotate(tiles)
    assert not ((plain[..., 2] > 200) & (plain[..., 0] < 80) & (plain[..., 1] < 80)).any()


def test_stale_ages_is_relative_to_the_newest_tile() -> None:
    tiles = [_tile(0, capture_ms=0.0), _tile(1, capture_ms=40.0), _tile(2, capture_ms=500.0)]
    assert stale_ages(tiles, 100.0) == {"s0": 500.0, "s1": 460.0}
    assert stale_ages(tiles, 1000.0) == {}
    assert stale_ages([], 0.0) == {}


def test_annotate_never_touches_the_tiles_images() -> None:
    tiles = [_tile(0, capture_ms=0.0), _tile(1, capture_ms=900.0)]
    before = [t.image.copy() for t in tiles]
    Compositor("grid", max_skew_ms=10.0).annotate(tiles)
    for t, b in zip(tiles, before, strict=True):
        assert np.array_equal(t.image, b)


def test_bad_input_is_a_clear_error() -> None:
    comp = Compositor("pip")
    with pytest.raises(ValueError, match="no tiles"):
        comp.annotate([])
    with pytest.raises(ValueError, match="twice"):
        comp.annotate([_tile(0), _tile(0)])
    with pytest.raises(ValueError, match="at most 4"):
        comp.annotate([_tile(i % 4) for i in range(4)] + [Tile("s9", _tile(0).image, 0)])
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        comp.annotate([Tile("g", np.zeros((4, 4), np.uint8), 0)])
    with pytest.raises(ValueError, match="layout"):
        Compositor("mosaic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_skew_ms"):
        Compositor(max_skew_ms=float("nan"))
