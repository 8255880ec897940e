"""Real ultrasound frames from DICOM files installed with pydicom and pydicom-data (offline).

The files are found in the installed packages' own folders (`pydicom/data/test_files`,
`data_store/data` of `pydicom-data`), never through `pydicom.data.get_testdata_file`, which may
try to download missing files. Several files of pydicom-data hold the same picture in different
transfer syntaxes (OBXXXX1A, _expb, _rle; US1_UNCR, _J2KR, ...): each picture is one *scan*
below, decoded from one file, so a held-out scan is truly unseen.

Frames are decoded as the `dicom` source decodes them (stream/sources/dicom.py: palette and YBR
to RGB, monochrome windowed) and turned into grey luminance with BT.601 weights, as the
pipeline's preprocessing does for a grey model (engines/preprocess.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.preprocess import BT601
from stream.sources.dicom import DicomSource, DicomSpec


@dataclass(frozen=True)
class Scan:
    """One real ultrasound file: a short name, its package and file, and the picture it shows
    (files of one picture are all in training or all held out)."""

    name: str
    package: str  # "pydicom" or "pydicom-data"
    file: str
    picture: str
    what: str


SCANS = (
    Scan(
        "echo", "pydicom", "examples_ybr_color.dcm", "cardiac", "cine, 30 frames, 320x240, YBR JPEG"
    ),
    Scan(
        "cine3d",
        "pydicom-data",
        "color3d_jpeg_baseline.dcm",
        "cardiac",
        "cine, 120 frames, 640x480, YBR JPEG",
    ),
    Scan("ob", "pydicom-data", "OBXXXX1A_2frame.dcm", "obstetric", "2 frames, 800x600, palette"),
    Scan(
        "palette", "pydicom", "examples_palette.dcm", "obstetric", "1 frame, 800x350 crop, palette"
    ),
    Scan("us1", "pydicom-data", "US1_UNCR.dcm", "lymph-node", "1 frame, 640x480, RGB"),
    Scan("rgb", "pydicom", "examples_rgb_color.dcm", "lymph-node", "1 frame, 320x240, RGB"),
    Scan(
        "aloka",
        "pydicom-data",
        "gdcm-US-ALOKA-16.dcm",
        "pelvis",
        "1 frame, 640x480, 16-bit palette",
    ),
)
# Pictures kept out of training, whole (every file of them), for evaluation. The cardiac
# cine is the one configs/dicom_cine.yaml plays: the despeckler never saw it.
HELD_OUT_PICTURES = ("cardiac", "obstetric")
HELD_OUT = tuple(s.name for s in SCANS if s.picture in HELD_OUT_PICTURES)
TRAIN = tuple(s.name for s in SCANS if s.picture not in HELD_OUT_PICTURES)
# Measured (tools/eval_real.py): the held-out files whose DICOM regions describe them, so the
# imaging area excludes the scanner's header bar; `palette` is a crop of `ob` whose regions do not.
EVALUATED = ("echo", "cine3d", "ob")
# JPGLosslessP14SV1_1s_1f_8b.dcm (pydicom-data, US) is left out: its JPEG Lossless pixel data
# needs gdcm or pylibjpeg. The other US files of the packages are the pictures above again in
# other transfer syntaxes (OBXXXX1A*, US1_*, gdcm-US-ALOKA-16_big, examples_jpeg2k) or tiny
# (ExplVR_BigEnd 80x60, color-pl/px 256x120).


class DataMissing(RuntimeError):
    """A package or file the real-ultrasound set needs is not installed."""


def package_dir(package: str) -> Path:
    """The folder of DICOM files inside an installed package."""
    try:
        if package == "pydicom":
            import pydicom.data

            return Path(pydicom.data.__file__).parent / "test_files"
        if package == "pydicom-data":
            import data_store

            return Path(data_store.__file__).parent / "data"
    except ImportError:
        raise DataMissing(
            f"{package} is not installed (pip install -e '.[train]' or '.[test]')"
        ) from None
    raise ValueError(f"unknown package {package!r}")


def scan(name: str) -> Scan:
    for s in SCANS:
        if s.name == name:
            return s
    raise ValueError(f"unknown scan {name!r}; known: {', '.join(s.name for s in SCANS)}")


def scan_path(s: Scan) -> Path:
    path = package_dir(s.package) / s.file
    if not path.is_file():
        raise DataMissing(f"{s.file} not found in {path.parent} ({s.package} too old?)")
    return path


def to_gray(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """uint8 grey luminance (BT.601) of a gray8 / rgb8 / bgr8 frame."""
    if pixel_format == "gray8":
        return image
    r, g, b = (
        image[..., i].astype(np.float32)
        for i in ((0, 1, 2) if pixel_format == "rgb8" else (2, 1, 0))
    )
    y = BT601["r"] * r + BT601["g"] * g + BT601["b"] * b
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def frames(name: str, every: int = 1, limit: int | None = None) -> Iterator[np.ndarray]:
    """The grey frames 0, every, 2 x every, ... of scan `name` (at most `limit`)."""
    source = DicomSource(DicomSpec(path=str(scan_path(scan(name)))))
    try:
        count = 0
        index = 0
        while limit is None or count < limit:
            cap = source.read()
            if cap is None:
                return
            if index % every == 0:
                yield to_gray(cap.image, cap.pixel_format)
                count += 1
            index += 1
    finally:
        source.close()


def region_mask(name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Union of the file's 2D tissue regions (SequenceOfUltrasoundRegions, spatial format 1),
    as a boolean mask of `shape`; None when the file has none that fits inside the frame (a
    rescaled or cropped copy keeps its original's regions: they do not describe it)."""
    import pydicom

    ds = pydicom.dcmread(str(scan_path(scan(name))), stop_before_pixels=True)
    rows, cols = shape[:2]
    mask = np.zeros(shape[:2], bool)
    for r in ds.get("SequenceOfUltrasoundRegions", []):
        if r.get("RegionSpatialFormat") != 1:
            continue
        x0, y0 = int(r.RegionLocationMinX0), int(r.RegionLocationMinY0)
        x1, y1 = int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)
        if x1 > cols or y1 > rows:  # x1 == cols: an inclusive bound one past the edge, clipped
            return None
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask if mask.any() else None

