"""Frames for the applicability gate: synthetic phantom frames and real ultrasound cines.

Phantom: `stream.sources.phantom` as the models are trained (even seeds sector, odd linear; see
tools/eval_seg.spec_for_seed) and as the demo runs it (512 x 512, consecutive frames).
Real: the ultrasound files that ship in pydicom's test data and in the `pydicom-data` package
(`pip install pydicom-data`), decoded by the pipeline's own DICOM source.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stream.sources.phantom import PhantomSpec, phantom_frame

Frame = tuple[np.ndarray, str]  # uint8 image, pixel format

# pydicom's own test files (always there with pydicom) and pydicom-data's, by file name
PYDICOM_US = ("examples_ybr_color.dcm", "examples_rgb_color.dcm", "examples_palette.dcm")
PYDICOM_DATA_US = (
    "color3d_jpeg_baseline.dcm",
    "OBXXXX1A_2frame.dcm",
    "US1_UNCR.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "gdcm-US-ALOKA-16.dcm",
)


def phantom_frames(seed: int, count: int, stride: int, geometry: str | None = None) -> Iterator[Frame]:
    """`count` frames of phantom `seed`, `stride` apart (geometry: by seed parity unless given)."""
    geo = geometry or ("sector" if seed % 2 == 0 else "linear")
    spec = PhantomSpec(seed=seed, geometry=geo)  # type: ignore[arg-type]
    for k in range(count):
        yield phantom_frame(spec, k * stride).image, "gray8"


def real_us_files() -> list[Path]:
    """The real ultrasound DICOM files installed here (pydicom test data, pydicom-data) that the
    DICOM source can decode (a file whose codec is not installed is left out)."""
    from pydicom.data import get_testdata_file

    files: list[Path] = []
    for name in PYDICOM_US:
        path = get_testdata_file(name)
        if isinstance(path, str):
            files.append(Path(path))
    try:
        import data_store  # the pydicom-data package

        root = Path(data_store.__file__).parent / "data"
        files += [root / n for n in PYDICOM_DATA_US if (root / n).is_file()]
    except ImportError:
        pass
    return [f for f in files if _decodable(f)]


def _decodable(path: Path) -> bool:
    from stream.sources.base import SourceError
    from stream.sources.dicom import DicomSource, DicomSpec

    try:
        DicomSource(DicomSpec(path=str(path))).close()
    except SourceError:
        return False
    return True


def dicom_frames(path: Path, max_frames: int = 40) -> Iterator[Frame]:
    """Up to `max_frames` frames of a DICOM file, evenly spread, as the pipeline displays them."""
    from stream.sources.dicom import DicomSource, DicomSpec

    src = DicomSource(DicomSpec(path=str(path)))
    try:
        step = max(1, -(-src.frames // max_frames))
        for i in range(src.frames):
            cap = src.read()
            if cap is None:
                break
            if i % step == 0:
                yield cap.image, cap.pixel_format
    finally:
        src.close()


def synthetic_ood_frames(size: int = 512) -> Iterator[tuple[str, Frame]]:
    """Frames no ultrasound model should apply to: flat grey, black, white noise, a gradient,
    and a natural-looking colour scene (smooth coloured shapes)."""
    rng = np.random.default_rng(0)
    yield "flat grey", (np.full((size, size), 128, np.uint8), "gray8")
    yield "black", (np.zeros((size, size), np.uint8), "gray8")
    yield "noise", (rng.integers(0, 256, (size, size), dtype=np.uint8), "gray8")
    ramp = np.tile(np.linspace(0, 255, size, dtype=np.float32), (size, 1)).astype(np.uint8)
    yield "ramp", (ramp, "gray8")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    scene = np.stack([120 + 100 * np.sin(6 * xx), 140 + 80 * np.cos(4 * yy), 90 + 60 * xx * yy], 2)
    yield "colour scene", (np.clip(scene, 0, 255).astype(np.uint8), "bgr8")
