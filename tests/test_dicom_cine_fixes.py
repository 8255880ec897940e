"""DICOM cines: ultrasound regions at the image edge, suspect spacing flagged, decode once per
cine (not once per loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pydicom = pytest.importorskip("pydicom", reason="pip install 'medstream[dicom]'")
from pydicom.dataset import Dataset  # noqa: E402

import stream.sources.dicom as dicom_module  # noqa: E402
from stream.geometry import SPACING_SUSPECT_KEY  # noqa: E402
from stream.sources.dicom import DicomSource, DicomSpec  # noqa: E402
from stream.sources.dicom_image import pixel_spacing  # noqa: E402

ECHO = str(Path(pydicom.__file__).parent / "data" / "test_files" / "examples_ybr_color.dcm")


def us_dataset(x1: int, y1: int, rows: int = 240, cols: int = 320) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.PhysicalUnitsXDirection = 3
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = 0.02
    region.PhysicalDeltaY = 0.03
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    ds = Dataset()
    ds.Rows, ds.Columns = rows, cols
    ds.SequenceOfUltrasoundRegions = [region]
    return ds


@pytest.mark.parametrize(
    ("x1", "y1", "suspect"),
    [
        (319, 239, False),  # the last pixel (inclusive bound)
        (320, 240, False),  # x1 == Columns, y1 == Rows: a common vendor convention
        (321, 200, True),
        (300, 241, True),
        (595, 414, True),  # the README's echo cine: a half-size copy of a larger cine
    ],
)
def test_a_region_ending_at_the_image_edge_is_inside(x1: int, y1: int, suspect: bool) -> None:
    spacing, source, warning = pixel_spacing(us_dataset(x1, y1))
    assert spacing == pytest.approx([0.3, 0.2]) and source == "SequenceOfUltrasoundRegions"
    assert bool(warning) == suspect, warning


def test_the_echo_cines_suspect_spacing_is_flagged_unless_the_config_confirms_it() -> None:
    flagged = DicomSource(DicomSpec(path=ECHO))
    cap = flagged.read()
    assert cap is not None
    assert "outside the 320x240 image" in cap.meta[SPACING_SUSPECT_KEY]
    assert cap.meta["pixel_spacing_mm"] == pytest.approx([0.5104970559] * 2)
    assert any("set spacing: confirmed" in e.message for e in flagged.pop_events())
    for spec in (DicomSpec(path=ECHO, spacing="confirmed"), DicomSpec(path=ECHO, pixel_spacing_mm=[0.2, 0.2])):
        source = DicomSource(spec)
        cap = source.read()
        assert cap is not None and SPACING_SUSPECT_KEY not in cap.meta
        source.close()
    flagged.close()


def counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every frame pydicom decodes for the DICOM source (by index)."""
    decoded: list[int] = []
    real = dicom_module._import_pydicom

    def patched() -> tuple[Any, Any, Any]:
        mod, pixel_array, lut = real()

        def counted(path: str, index: int, **kw: Any) -> Any:
            decoded.append(index)
            return pixel_array(path, index=index, **kw)

        return mod, counted, lut

    monkeypatch.setattr(dicom_module, "_import_pydicom", patched)
    return decoded


def test_a_looping_cine_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = counting_decoder(monkeypatch)
    source = DicomSource(DicomSpec(path=ECHO, loop=True))  # 30 frames x 230 KB: fits 512 MB
    caps = [source.read() for _ in range(95)]
    source.close()
    assert sorted(decoded) == list(range(30))  # every frame once, over three loops and more
    reference = DicomSource(DicomSpec(path=ECHO))
    first_loop = [reference.read() for _ in range(30)]
    reference.close()
    for i, cap in enumerate(caps):
        assert cap is not None and cap.meta["dicom_frame"] == i % 30
        ref = first_loop[i % 30]
        assert ref is not None and (cap.image == ref.image).all()
    # each read hands out its own array: a consumer writing into one cannot change the cache
    assert caps[31] is not None and caps[61] is not None
    assert caps[31].image is not caps[61].image
    caps[31].image[:] = 0
    assert (caps[61].image == first_loop[1].image).all()  # type: ignore[union-attr]


def test_a_cine_over_the_cache_bound_is_decoded_each_loop_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = counting_decoder(monkeypatch)
    source = DicomSource(DicomSpec(path=ECHO, loop=True, cache_mb=1.0))  # needs 6.6 MB
    for _ in range(90):
        assert source.read() is not None
    events = [e.message for e in source.pop_events()] + [e.message for e in source.pop_events()]
    source.close()
    assert len(decoded) == 2 + 29 + 30 + 30  # open: first and last; then 29 + 2 full loops
    said = [m for m in events if "cache_mb" in m]
    assert len(said) == 1 and "decoding every frame again on each loop" in said[0], events
