"""The synthetic ultrasound phantom and the source registry."""

from __future__ import annotations

import numpy as np
import pytest

from stream.sources import SOURCE_TYPES, open_source
from stream.sources.base import SourceError
from stream.sources.phantom import (
    LABELS,
    PhantomSource,
    PhantomSpec,
    _model,
    fov_mask,
    phantom_frame,
    pixel_spacing_mm,
)
from stream.spec import ConfigError, parse_spec

GEOMETRIES = ["sector", "linear"]


def _tissue_noise(spec: PhantomSpec, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(image - clean) as float, and the mask of mid-grey background tissue inside the FOV."""
    f = phantom_frame(spec, index)
    tissue = (f.truth == 0) & fov_mask(spec) & (f.clean > 60) & (f.clean < 200)
    return f.image.astype(np.float64) - f.clean, tissue


def _corr(noise: np.ndarray, mask: np.ndarray, dy: int, dx: int) -> float:
    h, w = noise.shape
    m = mask[: h - dy, : w - dx] & mask[dy:, dx:]
    return float(np.corrcoef(noise[: h - dy, : w - dx][m], noise[dy:, dx:][m])[0, 1])


def test_spec_defaults_and_parse() -> None:
    spec = parse_spec(PhantomSpec, {"seed": 7, "geometry": "linear"}, "src")
    assert (spec.width, spec.height, spec.fps, spec.seed) == (512, 512, 30.0, 7)
    assert spec.truth and not spec.clean
    with pytest.raises(ConfigError, match=r"src\.geometry"):
        parse_spec(PhantomSpec, {"geometry": "convex"}, "src")
    with pytest.raises(ConfigError, match=r"src\.speckle"):
        parse_spec(PhantomSpec, {"speckle": -1}, "src")


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_frames_are_deterministic(geometry: str) -> None:
    spec = PhantomSpec(seed=11, geometry=geometry)
    a = phantom_frame(spec, 42)
    _model.cache_clear()  # rebuilt from scratch: same bytes
    b = phantom_frame(spec, 42)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == np.uint8 and x.shape == (512, 512)
        np.testing.assert_array_equal(x, y)


def test_frames_differ_across_seeds_and_indices() -> None:
    a = phantom_frame(PhantomSpec(seed=1), 0)
    b = phantom_frame(PhantomSpec(seed=2), 0)
    c = phantom_frame(PhantomSpec(seed=1), 1)
    assert np.mean(a.truth != b.truth) > 0.02  # different layouts
    assert not np.array_equal(a.image, c.image)  # new speckle every frame


def test_size_follows_spec() -> None:
    f = phantom_frame(PhantomSpec(width=320, height=240), 0)
    assert f.image.shape == f.truth.shape == f.clean.shape == (240, 320)


def test_all_labels_appear_over_a_few_frames() -> None:
    seen: set[int] = set()
    for seed in range(4):
        for index in (0, 45):
            truth = phantom_frame(PhantomSpec(seed=seed), index).truth
            seen |= set(np.unique(truth).tolist())
    assert seen == set(range(len(LABELS)))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_black_and_background_outside_fov(geometry: str) -> None:
    spec = PhantomSpec(seed=3, geometry=geometry)
    outside = ~fov_mask(spec)
    assert 0.1 < outside.mean() < 0.6
    for index in (0, 17):
        f = phantom_frame(spec, index)
        assert not f.truth[outside].any()
        assert not f.image[outside].any()
        assert not f.clean[outside].any()


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_echo_levels_are_plausible(geometry: str) -> None:
    for seed in range(3):
        spec = PhantomSpec(seed=seed, geometry=geometry)
        f = phantom_frame(spec, 5)
        inside = fov_mask(spec)
        mean = {
            k: f.image[(f.truth == k) & inside].mean() for k in range(4) if (f.truth == k).any()
        }
        assert mean[1] < 0.4 * mean[0]  # anechoic: dark
        assert mean[3] > 1.2 * mean[0]  # interfaces: bright


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_speckle_statistics(geometry: str) -> None:
    noise, tissue = _tissue_noise(PhantomSpec(seed=4, geometry=geometry), 3)
    assert tissue.sum() > 10_000
    assert 12 < noise[tissue].std() < 35  # ~5 dB at 4.25 levels/dB
    assert abs(noise[tissue].mean()) < 5  # zero mean in the log domain
    lat, ax = _corr(noise, tissue, 0, 1), _corr(noise, tissue, 1, 0)
    assert lat > 0.5 and ax > 0.4  # correlated grains, not white noise
    assert _corr(noise, tissue, 0, 2) > _corr(noise, tissue, 2, 0)  # wider laterally
    assert abs(_corr(noise, tissue, 0, 12)) < 0.15  # but short-range


def test_no_speckle_gives_the_clean_image() -> None:
    f = phantom_frame(PhantomSpec(seed=5, speckle=0.0), 9)
    np.testing.assert_array_equal(f.image, f.clean)


def test_scene_moves_smoothly() -> None:
    spec = PhantomSpec(seed=6)
    t0, t1, t30 = (phantom_frame(spec, i).truth for i in (0, 1, 30))
    assert 0 < np.mean(t0 != t1) < 0.03  # small step between consecutive frames
    assert np.mean(t0 != t30) > 2 * np.mean(t0 != t1)  # that accumulates over a second


def test_still_probe_keeps_the_scene() -> None:
    spec = PhantomSpec(seed=6, motion=0.0, deform=0.0)
    a, b = phantom_frame(spec, 0), phantom_frame(spec, 50)
    np.testing.assert_array_equal(a.truth, b.truth)
    np.testing.assert_array_equal(a.clean, b.clean)
    assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("index", [-1, 1.5, True, "3"])
def test_bad_index(index: object) -> None:
    with pytest.raises(ValueError, match="index"):
        phantom_frame(PhantomSpec(), index)  # type: ignore[arg-type]


def test_source_reads_frames_with_truth_and_meta() -> None:
    spec = PhantomSpec(seed=2, clean=True, frames=3)
    src = PhantomSource(spec)
    assert src.fps == 30.0
    caps = [src.read() for _ in range(4)]
    assert caps[3] is None  # finite when frames is set
    for i, cap in enumerate(caps[:3]):
        assert cap is not None
        ref = phantom_frame(spec, i)
        assert cap.pixel_format == "gray8"
        np.testing.assert_array_equal(cap.image, ref.image)
        np.testing.assert_array_equal(cap.parts["truth"], ref.truth)
        np.testing.assert_array_equal(cap.parts["clean"], ref.clean)
        assert cap.meta["phantom_index"] == i
        assert cap.meta["pixel_spacing_mm"] == list(pixel_spacing_mm(spec))
    assert src.frames_read == 3
    src.close()
    with pytest.raises(SourceError, match="close"):
        src.read()


def test_source_parts_follow_flags() -> None:
    cap = PhantomSource(PhantomSpec(truth=False)).read()
    assert cap is not None and cap.parts == {}
    row_mm, col_mm = cap.meta["pixel_spacing_mm"]
    assert row_mm == col_mm and 0.05 < row_mm < 0.3  # ~60 mm over ~450-512 rows


def test_open_source_phantom() -> None:
    assert "phantom" in SOURCE_TYPES
    src = open_source({"type": "phantom", "seed": 4, "width": 256, "height": 200}, "s")
    cap = src.read()
    assert cap is not None and cap.image.shape == (200, 256)
    src.close()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"type": "webcam"}, r"stages\[0\]\.source\.type: unknown source type 'webcam'.*phantom"),
        ({"seed": 1}, r"stages\[0\]\.source\.type: required.*phantom"),
        ({"type": "phantom", "sed": 1}, r"stages\[0\]\.source: unknown key 'sed'"),
        ({"type": "phantom", "width": 8}, r"stages\[0\]\.source\.width"),
        ({"type": "phantom", "fps": "fast"}, r"stages\[0\]\.source\.fps"),
        ("phantom", r"stages\[0\]\.source: expected a mapping"),
    ],
)
def test_open_source_errors_name_the_key(raw: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_source(raw, "stages[0].source")  # type: ignore[arg-type]
