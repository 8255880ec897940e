"""The DICOM source on the real files in pydicom's wheel: the echocardiography cine (JPEG,
YBR_FULL_422), palette colour, monochrome 8/16-bit, RLE, multi-frame; one-line errors for a
missing, corrupt, truncated or undecodable file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="pip install 'medstream[dicom]'")
from pydicom.pixels import pixel_array  # noqa: E402

from stream.sources import SOURCE_TYPES  # noqa: E402
from stream.sources.base import SourceError  # noqa: E402
from stream.sources.dicom import DicomSource, DicomSpec  # noqa: E402
from stream.spec import ConfigError, parse_spec  # noqa: E402

ECHO = "examples_ybr_color.dcm"  # 30-frame ultrasound cine, JPEG baseline, YBR_FULL_422


def local(name: str) -> str:
    """A file from pydicom's wheel (never the network: missing files would be downloaded)."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.exists(), path
    return str(path)


def read_all(source: DicomSource, limit: int = 1000) -> list:
    out = []
    while len(out) < limit and (cap := source.read()) is not None:
        out.append(cap)
    return out


def test_echo_cine_frames_rate_and_spacing() -> None:
    source = DicomSource(DicomSpec(path=local(ECHO)))
    caps = read_all(source)
    events = source.pop_events()
    source.close()
    assert len(caps) == 30
    assert source.fps == pytest.approx(1000 / 33.333, rel=1e-4)  # FrameTime 33.333 ms
    for i, cap in enumerate(caps):
        assert cap.pixel_format == "rgb8" and cap.image.shape == (240, 320, 3)
        assert cap.meta["dicom_frame"] == i
        # PhysicalDeltaX/Y of the 2D region, in cm -> mm
        assert cap.meta["pixel_spacing_mm"] == pytest.approx([0.5104970559, 0.5104970559])
    # YBR_FULL_422 is converted to RGB: the grey echo has R == G == B almost everywhere
    img = caps[10].image.astype(int)
    assert np.abs(img[..., 0] - img[..., 2]).mean() < 2
    assert np.array_equal(caps[7].image, pixel_array(local(ECHO), index=7, as_rgb=True))
    assert not np.array_equal(caps[0].image, caps[15].image)  # the heart moves
    texts = " ".join(e.message for e in events)
    assert "30 frame(s) YBR_FULL_422" in texts and "FrameTime" in texts
    assert "SequenceOfUltrasoundRegions" in texts
    # the file's region lies outside its (downscaled) pixels: said, not hidden
    assert any(e.counts.get("dicom_spacing_suspect") for e in events)


def test_loop_and_overrides() -> None:
    spec = DicomSpec(
        path=local(ECHO), fps=10.0, loop=True, pixel_spacing_mm=[0.2, 0.3], orientation=["L", "P"]
    )
    source = DicomSource(spec)
    caps = read_all(source, limit=65)
    source.close()
    assert source.fps == 10.0 and len(caps) == 65
    assert caps[30].meta["dicom_frame"] == 0 and caps[64].meta["dicom_frame"] == 4
    assert np.array_equal(caps[31].image, caps[1].image)
    assert caps[0].meta["pixel_spacing_mm"] == [0.2, 0.3]
    assert caps[0].meta["patient_orientation"] == ["L", "P"]


@pytest.mark.parametrize(
    "name, frames, shape, fmt, spacing",
    [
        ("examples_palette.dcm", 1, (350, 800, 3), "rgb8", 0.26228787),  # PALETTE COLOR, US
        ("MR_small.dcm", 1, (64, 64), "gray8", 0.3125),  # 16-bit MONOCHROME2
        ("MR_small_RLE.dcm", 1, (64, 64), "gray8", 0.3125),  # RLE lossless
        ("SC_ybr_full_422_uncompressed.dcm", 1, (100, 100, 3), "rgb8", 1.0),
        ("SC_rgb_rle_16bit_2frame.dcm", 2, (100, 100, 3), "rgb8", 1.0),  # 16-bit RGB
        ("rtdose.dcm", 15, (10, 10), "gray8", 10.0),  # 32-bit multi-frame
    ],
)
def test_photometric_interpretations(name, frames, shape, fmt, spacing) -> None:
    source = DicomSource(DicomSpec(path=local(name)))
    caps = read_all(source)
    source.close()
    assert len(caps) == frames
    for cap in caps:
        assert cap.image.shape == shape and cap.image.dtype == np.uint8
        assert cap.pixel_format == fmt
        assert cap.meta["pixel_spacing_mm"][1] == pytest.approx(spacing)
    assert caps[0].image.max() > caps[0].image.min()  # windowed to a visible range


def test_palette_colour_goes_through_the_lookup_table() -> None:
    from pydicom.pixels import apply_color_lut

    path = local("examples_palette.dcm")
    cap = DicomSource(DicomSpec(path=path)).read()
    assert cap is not None
    ds = pydicom.dcmread(path)
    rgb16 = apply_color_lut(pixel_array(ds), ds)  # 16-bit palette entries
    assert np.array_equal(cap.image, (rgb16 >> 8).astype(np.uint8))
    assert (cap.image[..., 0] != cap.image[..., 2]).mean() > 0.1  # colour, not grey


def test_monochrome_uses_the_file_window() -> None:
    raw = pixel_array(local("MR_small.dcm"))
    cap = DicomSource(DicomSpec(path=local("MR_small.dcm"))).read()
    assert cap is not None
    # the mapping is monotonic: brighter stored values are never darker on screen
    order = np.argsort(raw.ravel(), kind="stable")
    shown = cap.image.ravel()[order].astype(int)
    assert (np.diff(shown) >= 0).all()


def _one_line(path: str) -> str:
    with pytest.raises(SourceError) as err:
        DicomSource(DicomSpec(path=path))
    message = str(err.value)
    assert "\n" not in message and message.startswith("dicom source: cannot read ")
    return message


def test_missing_corrupt_truncated_and_undecodable_files(tmp_path: Path) -> None:
    assert _one_line(str(tmp_path / "none.dcm")).endswith("none.dcm: no such file")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "junk.dcm: not a DICOM file" in _one_line(str(junk))
    # the echo cine cut in the middle of its pixel data
    cut = tmp_path / "cut.dcm"
    data = Path(local(ECHO)).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    message = _one_line(str(cut))
    assert "cut.dcm: frame 29 of 30 (JPEG Baseline (Process 1)) cannot be decoded" in message
    # a damaged header: the preamble is there, the elements are garbage
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(data[:132] + b"\x02\x00\x10\x00UI\xff\xff" + b"\x00" * 64)
    assert "damaged.dcm: " in _one_line(str(damaged))
    # a structured report: a DICOM file with no image
    assert "no image" in _one_line(local("reportsi.dcm"))
    truncated = tmp_path / "mr.dcm"
    shutil.copy(local("MR_truncated.dcm"), truncated)  # pydicom's own truncated file
    assert "frame 0 of 1 (Explicit VR Little Endian) cannot be decoded" in _one_line(str(truncated))


def test_a_transfer_syntax_without_a_decoder_names_it() -> None:
    try:  # JPEG-LS needs pyjpegls, pylibjpeg or gdcm; skip where one is installed
        pixel_array(local("SC_rgb_jls_lossy_line.dcm"))
    except RuntimeError:
        pass
    else:
        pytest.skip("a JPEG-LS decoder is installed")
    assert "JPEG-LS Lossy" in _one_line(local("SC_rgb_jls_lossy_line.dcm"))


def test_registered_and_config_errors_name_the_key() -> None:
    assert SOURCE_TYPES["dicom"][0] is DicomSpec
    with pytest.raises(ConfigError, match=r"^s\.path: expected a DICOM file path"):
        parse_spec(DicomSpec, {}, "s")
    with pytest.raises(ConfigError, match=r"^s\.orientation: patient_orientation must be"):
        parse_spec(DicomSpec, {"path": "x.dcm", "orientation": ["Q", "P"]}, "s")


def test_a_frame_that_cannot_be_decoded_is_skipped_said_once_and_counted(tmp_path: Path) -> None:
    """Frame 10 of the echo cine cut to 20 bytes: the source failed there ('cannot be decoded'),
    the grab stage crashed, and each restart replayed frames 0-9 until it gave up."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(local(ECHO))
    fragments = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    fragments[10] = fragments[10][:20]
    ds.PixelData = encapsulate(fragments)
    path = tmp_path / "echo_damaged.dcm"
    ds.save_as(path)
    once = DicomSource(DicomSpec(path=str(path)))
    caps = read_all(once)
    events = once.pop_events()
    once.close()
    assert [c.meta["dicom_frame"] for c in caps] == [i for i in range(30) if i != 10]
    damaged = [e for e in events if e.counts.get("source_damaged")]
    assert len(damaged) == 1 and damaged[0].message.startswith(
        f"dicom source: cannot read {path}: frame 10 of 30 (JPEG Baseline"
    )
    assert damaged[0].message.endswith(": skipped")
    looped = DicomSource(DicomSpec(path=str(path), loop=True))
    caps = read_all(looped, limit=70)
    events = looped.pop_events()
    looped.close()
    assert [c.meta["dicom_frame"] for c in caps][28:31] == [29, 0, 1]
    damaged = [e for e in events if e.counts.get("source_damaged")]
    assert [bool(e.message) for e in damaged] == [True, False, False]  # counted each pass
