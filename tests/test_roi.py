"""The imaging region: config values, DICOM regions, the automatic detector, RoiSource."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from stream.config import load_config
from stream.roi.detect import RegionDetector
from stream.roi.dicom_regions import dicom_region
from stream.roi.region import ABSENT, Region, iou, rect_polygon, region_from_meta
from stream.roi.setting import parse_roi_setting
from stream.roi.source import RoiSource
from stream.sources.base import Capture, SourceError
from stream.spec import ConfigError
from tests.roi_frames import scanner_frame, sector_mask, ui_mask

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset  # noqa: E402


def _region(fmt: int, kind: int, x0: int, y0: int, x1: int, y1: int) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType = fmt, kind
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    return r


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("value", "mode", "points"),
    [
        ("auto", "auto", None),
        ("none", "none", None),
        ("dicom", "dicom", None),
        ([10, 20, 100, 200], "config", 4),
        ([[0, 0], [50, 0], [25, 40]], "config", 3),
    ],
)
def test_roi_setting_accepts(value: object, mode: str, points: int | None) -> None:
    s = parse_roi_setting(value, "stages[0].roi")
    assert s.mode == mode
    assert (None if s.polygon is None else len(s.polygon)) == points


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("sector", "expected one of 'default', 'auto'"),
        ([1, 2, 3], "four numbers"),
        ([100, 20, 10, 200], "x0 < x1"),
        ([[0, 0], [1, 1]], "3 to 1024"),
        ([[0, 0], [1, "a"], [2, 2]], "two finite numbers"),
        ([[0, 0], [-5, 1], [2, 2]], ">= 0"),
        ({"x": 1}, "expected one of"),
    ],
)
def test_roi_setting_errors_name_the_key(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        parse_roi_setting(value, "stages[0].roi")
    assert str(e.value).startswith("stages[0].roi: ")


def test_a_config_with_a_bad_roi_fails_at_load() -> None:
    with open("configs/ultrasound_seg.yaml") as f:
        data = yaml.safe_load(f)
    grab = next(i for i, s in enumerate(data["stages"]) if s["kind"] == "grab")
    data["stages"][grab]["roi"] = [0, 0, 10]
    with pytest.raises(ConfigError, match=rf"stages\[{grab}\]\.roi: a rectangle"):
        load_config(data)
    data["stages"][grab]["roi"] = [0, 0, 10, 10]
    assert load_config(data).stages[grab].roi == [0, 0, 10, 10]


# ---------------------------------------------------------------- meta


def test_region_meta_round_trip_and_malformed_values() -> None:
    r = Region("config", rect_polygon(1, 2, 30, 40))
    assert region_from_meta({"roi": r.meta()}) == r
    assert region_from_meta({"roi": None}) is None
    assert region_from_meta({}) is ABSENT
    for bad in ({"source": "magic", "polygon": [[0, 0]] * 3}, {"source": "auto"}, [1, 2]):
        with pytest.raises(ValueError):
            region_from_meta({"roi": bad})
    m = r.mask(50, 50)
    assert m[2, 1] and m[40, 30] and not m[41, 30] and not m[2, 0]
    assert m.sum() == 30 * 39


# ---------------------------------------------------------------- DICOM regions


def test_dicom_region_takes_the_largest_2d_tissue_region_and_skips_the_rest() -> None:
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = [
        _region(4, 10, 176, 522, 743, 576),  # ECG waveform
        _region(3, 3, 0, 400, 799, 599),  # PW spectral Doppler: bigger, but not drawn on
        _region(1, 2, 300, 100, 500, 300),  # colour flow box inside the tissue region
        _region(1, 1, 120, 60, 800, 518),  # tissue, x1 == Columns (seen in real files)
    ]
    region, warnings = dicom_region(ds, 600, 800)
    assert region == Region("dicom", rect_polygon(120, 60, 799, 518))
    assert any("2 2D ultrasound regions" in w for w in warnings)


def test_dicom_region_outside_a_resized_image_is_ignored() -> None:
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = [_region(1, 1, 84, 31, 595, 414)]
    region, warnings = dicom_region(ds, 240, 320)
    assert region is None
    assert "does not fit the 320x240 image" in warnings[0]


def test_dicom_source_exposes_its_region_and_roi_dicom_without_one_fails() -> None:
    from pydicom.data import get_testdata_file

    from stream.sources.dicom import DicomSource, DicomSpec

    echo = DicomSource(DicomSpec(path=str(get_testdata_file("examples_ybr_color.dcm"))))
    assert echo.imaging_region is None  # its regions belong to the 640x480 original
    assert any("does not fit" in e.message for e in echo.pop_events())
    with pytest.raises(SourceError, match="roi: dicom, but the source has no usable"):
        RoiSource(echo, parse_roi_setting("dicom", "roi"), "grab")
    assert echo.closed


def test_dicom_source_region_of_a_real_file_with_x1_equal_to_columns() -> None:
    """pydicom-data's OBXXXX1A (800 x 600 palette colour): tissue region x1 == Columns."""
    data_store = pytest.importorskip("data_store", reason="pip install pydicom-data")
    from pathlib import Path

    from stream.sources.dicom import DicomSource, DicomSpec

    path = Path(data_store.__file__).parent / "data" / "OBXXXX1A_rle_2frame.dcm"
    source = DicomSource(DicomSpec(path=str(path)))
    assert source.imaging_region == Region("dicom", rect_polygon(120, 60, 799, 518))
    wrapped = RoiSource(source, parse_roi_setting("default", "roi"))
    cap = wrapped.read()
    assert cap is not None and cap.meta["roi"] == source.imaging_region.meta()


# ---------------------------------------------------------------- detector


def _mask(region: Region | None) -> np.ndarray:
    assert region is not None
    return region.mask(240, 320)


def test_detector_finds_the_sector_and_leaves_out_text_colour_bar_and_ecg() -> None:
    det = RegionDetector()
    regions = [det.update(scanner_frame(i)) for i in range(40)]
    assert regions[0] is None  # warming up: no region yet
    first = next(i for i, r in enumerate(regions) if r is not None)
    assert first <= 12
    got = _mask(regions[-1])
    assert iou(got, sector_mask(1)) > 0.9
    assert not (got & ui_mask(1)).any()
    assert regions[-1] is not None and regions[-1].source == "auto"


def test_detector_redetects_after_a_depth_change() -> None:
    det = RegionDetector()
    for i in range(40):
        det.update(scanner_frame(i, depth=2))
    small = _mask(det.region)
    assert iou(small, sector_mask(2)) > 0.9
    # the sector grows over what was static background: the region is dropped at once
    grown = [det.update(scanner_frame(i, depth=1)) for i in range(40, 80)]
    assert any(r is None for r in grown[:4])
    assert det.changes >= 1
    assert iou(_mask(grown[-1]), sector_mask(1)) > 0.9
    assert not (_mask(grown[-1]) & ui_mask(1)).any()
    # the sector shrinks: the newest samples' region covers much less than the window's, so the
    # older samples are forgotten at the next detections
    changes = det.changes
    shrunk = [det.update(scanner_frame(i, depth=2)) for i in range(80, 100)]
    assert det.changes > changes
    assert iou(_mask(shrunk[-1]), sector_mask(2)) > 0.9
    assert not (_mask(shrunk[-1]) & ui_mask(2)).any()


def test_detector_keeps_the_region_on_a_frozen_image() -> None:
    det = RegionDetector()
    for i in range(30):
        det.update(scanner_frame(i))
    region = det.region
    frozen = scanner_frame(30)
    for _ in range(40):
        assert det.update(frozen) == region


def test_detector_on_a_real_cine_matches_its_sector() -> None:
    """pydicom's echo cine (30 frames, YBR JPEG): the region covers the fan and no static UI."""
    from pydicom.data import get_testdata_file

    from stream.sources.dicom import DicomSource, DicomSpec

    source = DicomSource(DicomSpec(path=str(get_testdata_file("examples_ybr_color.dcm"))))
    frames = []
    while (cap := source.read()) is not None:
        frames.append(cap.image)
    stack = np.stack(frames)
    spread = (stack.max(axis=0).astype(int) - stack.min(axis=0)).max(axis=2)
    static_ui = (spread == 0) & (stack.max(axis=(0, 3)) > 40)  # text, icons, ruler marks
    assert static_ui.sum() > 500
    det = RegionDetector()
    for f in frames + frames:
        det.update(f)
    got = _mask(det.region).astype(bool)
    # the fan: the hull of the pixels that change, without the small UI counters
    fan = spread > 0
    fan[:40, :] = False
    fan[200:, :] = False
    assert (got & static_ui).sum() <= 0.002 * static_ui.sum()
    assert (got & fan).sum() / fan.sum() > 0.85
    assert det.changes == 0


# ---------------------------------------------------------------- RoiSource


class _Frames:
    def __init__(self, images: list[np.ndarray], meta: dict | None = None) -> None:
        self.images = images
        self.meta = meta or {}
        self.fps: float | None = 25.0
        self.closed = False

    def read(self) -> Capture | None:
        if not self.images:
            return None
        return Capture(self.images.pop(0), "rgb8", meta=dict(self.meta))

    def close(self) -> None:
        self.closed = True


def test_roi_source_auto_sets_null_then_the_region_and_reports_it() -> None:
    src = RoiSource(_Frames([scanner_frame(i) for i in range(20)]), parse_roi_setting("auto", "r"))
    metas = []
    while (cap := src.read()) is not None:
        metas.append(cap.meta["roi"])
    assert metas[0] is None and metas[-1]["source"] == "auto"
    events = src.pop_events()
    assert any(e.counts.get("roi_changes") == 1 for e in events)
    assert src.fps == 25.0
    src.close()
    assert src.source.closed  # type: ignore[attr-defined]


def test_roi_source_config_none_and_recorded() -> None:
    img = scanner_frame(0)
    cap = RoiSource(_Frames([img]), parse_roi_setting([1, 2, 30, 40], "r")).read()
    assert (
        cap is not None and cap.meta["roi"] == Region("config", rect_polygon(1, 2, 30, 40)).meta()
    )
    cap = RoiSource(_Frames([img]), parse_roi_setting("none", "r")).read()
    assert cap is not None and "roi" not in cap.meta
    recorded = {"roi": Region("dicom", rect_polygon(0, 0, 9, 9)).meta()}
    cap = RoiSource(_Frames([img], recorded), parse_roi_setting("default", "r")).read()
    assert cap is not None and cap.meta["roi"] == recorded["roi"]
