"""The endoscope's tool-tracking realism: instrument types, smoke, blur, occlusion, tip truth."""

from __future__ import annotations

import numpy as np

from stream.sources.endoscopy import TOOL_LABELS, EndoscopySpec, endoscopy_frame

REAL = dict(tool_types=True, smoke=0.5, blur=1.5, occlusion=0.4, truth_boxes=True)


def test_realism_is_deterministic_and_off_by_default() -> None:
    spec = EndoscopySpec(seed=5, instruments=3, **REAL)
    a, b = (
        endoscopy_frame(spec, 33),
        endoscopy_frame(EndoscopySpec(seed=5, instruments=3, **REAL), 33),
    )
    np.testing.assert_array_equal(a.image, b.image)
    assert a.boxes == b.boxes
    plain = endoscopy_frame(EndoscopySpec(seed=5, instruments=3), 33)
    assert plain.boxes == []  # no truth boxes unless asked
    assert not np.array_equal(plain.image, a.image)


def test_truth_boxes_cover_the_instruments_tips() -> None:
    seen_types: set[int] = set()
    for seed in range(4):
        spec = EndoscopySpec(seed=seed, instruments=3, tool_types=True, truth_boxes=True)
        f = endoscopy_frame(spec, 0)
        ids = [int(b[5]) for b in f.boxes]
        assert len(ids) == len(set(ids)) and set(ids) <= {0, 1, 2}
        for x0, y0, x1, y1, kind, _id, tx, ty in f.boxes:
            assert 0 <= x0 < x1 <= spec.width and 0 <= y0 < y1 <= spec.height
            assert 0 <= kind < len(TOOL_LABELS)
            seen_types.add(int(kind))
            inside = f.truth[int(y0) : int(y1), int(x0) : int(x1)]
            assert inside.mean() > 0.2  # the box holds instrument pixels
            size = max(x1 - x0, y1 - y0)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            assert np.hypot(tx - cx, ty - cy) < size  # the tip point lies at the box
    assert len(seen_types) >= 3  # several instrument types over a few seeds


def test_ids_are_stable_and_occlusion_hides_tips() -> None:
    spec = EndoscopySpec(seed=2, instruments=2, tool_types=True, occlusion=1.0, truth_boxes=True)
    kinds: dict[int, int] = {}
    counts = []
    for index in range(0, 900, 15):
        f = endoscopy_frame(spec, index)
        counts.append(len(f.boxes))
        for b in f.boxes:
            assert kinds.setdefault(int(b[5]), int(b[4])) == int(b[4])  # an id keeps its type
    assert min(counts) < max(counts)  # the flap hides tips some of the time


def test_smoke_and_blur_change_the_image() -> None:
    base = EndoscopySpec(seed=1, instruments=2, tool_types=True)
    ref = endoscopy_frame(base, 20).image.astype(int)
    smoky = endoscopy_frame(EndoscopySpec(seed=1, instruments=2, tool_types=True, smoke=1.0), 20)
    assert np.abs(smoky.image.astype(int) - ref).mean() > 1.0
    blurred = endoscopy_frame(EndoscopySpec(seed=1, instruments=2, tool_types=True, blur=3.0), 20)
    diff = np.abs(blurred.image.astype(int) - ref).sum(2)
    assert 0 < (diff > 20).mean() < 0.2  # only around the moving instruments
