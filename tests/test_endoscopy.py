"""The synthetic endoscopy source: deterministic BGR frames with instrument truth, fast."""

from __future__ import annotations

import numpy as np
import pytest

from engines import EngineSpec, load_pipeline
from stream.sources import open_source
from stream.sources.endoscopy import EndoscopySpec, endoscopy_frame
from stream.spec import ConfigError


def test_frames_are_deterministic_and_move() -> None:
    spec = EndoscopySpec(seed=3)
    a, b = endoscopy_frame(spec, 10), endoscopy_frame(EndoscopySpec(seed=3), 10)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.truth, b.truth)
    later = endoscopy_frame(spec, 40)
    assert not np.array_equal(a.truth, later.truth)  # instruments move
    other = endoscopy_frame(EndoscopySpec(seed=4), 10)
    assert not np.array_equal(a.image, other.image)


def test_frame_contents() -> None:
    f = endoscopy_frame(EndoscopySpec(seed=1, width=320, height=240), 0)
    assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
    assert f.truth.shape == (240, 320) and set(np.unique(f.truth)) <= {0, 1}
    assert 0.005 < f.truth.mean() < 0.3  # some instrument, mostly tissue
    corners = f.image[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert not corners.any()  # black outside the circular view
    assert not f.truth[[0, 0, -1, -1], [0, -1, 0, -1]].any()
    tissue = f.image[f.truth == 0].reshape(-1, 3)
    tissue = tissue[tissue.sum(1) > 60]
    b, g, r = tissue.mean(0)
    assert r > g + 30 and r > b + 30  # reddish mucosa
    metal = f.image[f.truth == 1].astype(int)
    assert np.abs(metal[:, 2] - metal[:, 0]).mean() < 25  # grey metal: low saturation
    assert f.image.max() >= 230  # specular highlights


def test_source_and_registry() -> None:
    src = open_source(
        {"type": "endoscopy", "seed": 2, "frames": 2, "width": 160, "height": 128}, "s"
    )
    cap = src.read()
    assert cap is not None and cap.pixel_format == "bgr8" and cap.image.shape == (128, 160, 3)
    assert cap.parts["truth"].shape == (128, 160) and cap.meta["labels"] == [
        "background",
        "instrument",
    ]
    assert src.read() is not None and src.read() is None
    src.close()
    with pytest.raises(ConfigError, match="instruments"):
        open_source({"type": "endoscopy", "instruments": 9}, "s")


def test_classical_instruments_finds_the_tools() -> None:
    p = load_pipeline(EngineSpec(model="classical-instruments"))
    inter = union = 0
    for i in range(3):
        f = endoscopy_frame(EndoscopySpec(seed=20 + i), 15 * i)
        mask = p(f.image, "bgr8").mask
        inter += int(np.sum((mask == 1) & (f.truth == 1)))
        union += int(np.sum((mask == 1) | (f.truth == 1)))
    assert inter / union > 0.2  # a weak baseline: black-coated shafts and pale fat fool it
