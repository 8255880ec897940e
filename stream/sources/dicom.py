"""DICOM source: a single image or a multi-frame cine (ultrasound, XA, ...) read with pydicom.

Frames are decoded one at a time from the file (`pydicom.pixels.pixel_array(path, index=i)`),
so a long cine is never held in memory; compressed transfer syntaxes go through whichever of
pydicom's decoders are installed (Pillow: JPEG baseline/extended, JPEG 2000; RLE and deflate
built in; JPEG-LS needs pyjpegls, pylibjpeg or gdcm). Colour: RGB and YBR_* frames are sent as
rgb8, PALETTE COLOR through its lookup table, monochrome as gray8 through the file's window.

The grab stage paces the frames at the file's own rate (FrameTime, the mean of FrameTimeVector,
CineRate or RecommendedDisplayFrameRate; `fps` overrides it). Pixel spacing (PixelSpacing, the
enhanced-multiframe pixel measures, or the first 2D ultrasound region, converted from cm) goes
into every frame's `meta["pixel_spacing_mm"]`, PatientOrientation into
`meta["patient_orientation"]`. A spacing the file itself casts doubt on (its ultrasound region lies
outside the image: a resized copy) is sent with `meta["pixel_spacing_suspect"]` (the reason), so
it is not drawn as a measurement, unless the config confirms it (`spacing: confirmed`) or gives
its own (`pixel_spacing_mm`). A looping cine's decoded frames are kept in memory when they fit
in `cache_mb`, so each frame is decoded once, not once per loop. The largest 2D tissue region of
SequenceOfUltrasoundRegions is `imaging_region` (stream.roi.dicom_regions), for the grab stage's
`roi:`. The file is checked at open (its first and last frames decoded),
so a missing, non-DICOM, truncated or undecodable file is one `SourceError` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream.geometry import SPACING_SUSPECT_KEY, geometry_meta, validate_geometry_fields
from stream.roi.dicom_regions import dicom_region
from stream.sources.base import Capture, EventLog, SourceError, one_line
from stream.sources.dicom_image import (
    GrayWindow,
    frame_count,
    frame_rate,
    patient_orientation,
    pixel_spacing,
    to_uint8_rgb,
)
from stream.spec import ConfigError, bounded

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
CONFIRMED_NOTE = " (confirmed by the config: used as is)"
SUSPECT_NOTE = " (not drawn as a measurement; set spacing: confirmed or pixel_spacing_mm)"


@dataclass(frozen=True)
class DicomSpec:
    """The `source:` section for `type: dicom`."""

    path: str = bounded("", doc="DICOM file: a single image or a multi-frame cine")
    fps: float | None = bounded(None, 0.1, 1000.0, doc="play at this rate (null: the file's own)")
    loop: bool = bounded(False, doc="start again after the last frame")
    pixel_spacing_mm: list[float] | None = bounded(
        None, doc="[row_mm, col_mm] overriding the file's (null: from the file)"
    )
    orientation: list[str] | None = bounded(
        None, doc="patient directions of increasing column and row (null: PatientOrientation)"
    )
    spacing: Literal["auto", "confirmed"] = bounded(
        "auto",
        doc="confirmed: trust the file's spacing even where it looks suspect (a region outside "
        "the image); auto: a suspect spacing is sent flagged, never drawn as a scale bar",
    )
    cache_mb: float = bounded(
        512.0, 0.0, 1e6, doc="loop: keep decoded frames up to this size (0: decode each loop)"
    )

    def validate(self, where: str) -> None:
        if not self.path:
            raise ConfigError(f"{where}.path: expected a DICOM file path, got ''")
        validate_geometry_fields(self, where)


def _import_pydicom() -> tuple[Any, Any, Any]:
    try:
        import pydicom
        from pydicom.pixels import apply_color_lut, pixel_array
    except ImportError:
        raise SourceError(
            "dicom source: pydicom is not installed (pip install 'medstream[dicom]')"
        ) from None
    return pydicom, pixel_array, apply_color_lut


class DicomSource(EventLog):
    """Frames of one DICOM file, in order (see the module doc)."""

    def __init__(self, spec: DicomSpec) -> None:
        super().__init__()
        self.spec = spec
        self.path = Path(spec.path)
        self._pydicom, self._pixel_array, self._apply_color_lut = _import_pydicom()
        self.ds = self._read_header()
        self.frames = frame_count(self.ds)
        self.photometric = str(self.ds.get("PhotometricInterpretation", "")).strip()
        self.bits = int(self.ds.get("BitsStored") or self.ds.get("BitsAllocated") or 8)
        rate, rate_from = frame_rate(self.ds)
        self.fps: float | None = spec.fps or rate
        spacing, spacing_from, spacing_warning = pixel_spacing(self.ds)
        spacing = spec.pixel_spacing_mm or spacing
        orientation = spec.orientation or patient_orientation(self.ds)
        self._meta: dict[str, Any] = geometry_meta(spacing, orientation)
        self._meta["modality"] = str(self.ds.get("Modality", ""))
        suspect = bool(spacing_warning) and not spec.pixel_spacing_mm
        if suspect and spec.spacing != "confirmed":
            self._meta[SPACING_SUSPECT_KEY] = spacing_warning
        self._cache = self._make_cache()
        # the 2D tissue region of SequenceOfUltrasoundRegions, for `roi:` (stream.roi.source)
        self.imaging_region, region_warnings = dicom_region(
            self.ds, int(self.ds.Rows), int(self.ds.Columns)
        )
        for warning in region_warnings:
            self._event(f"dicom source {self.path}: {warning}")
        first = self._decode_raw(0)
        self._window = GrayWindow(self.ds, first) if self.photometric in MONOCHROME else None
        self._first: tuple[np.ndarray, str] | None = self._display(first, 0)
        self._keep(0, self._first)
        if self.frames > 1:
            last = self.frames - 1
            self._keep(last, self._display(self._decode_raw(last), last))
        self.index = 0
        self.closed = False
        self._damaged: set[int] = set()  # frames that could not be decoded (said once each)
        if suspect:
            self._event(
                f"dicom source {self.path}: {spacing_warning}"
                + (CONFIRMED_NOTE if spec.spacing == "confirmed" else SUSPECT_NOTE),
                {"dicom_spacing_suspect": 1},
            )
        self._event(
            f"dicom source {self.path}: {self.frames} frame(s) {self.photometric} "
            f"{self.ds.get('Columns')}x{self.ds.get('Rows')}, "
            f"{f'{self.fps:.2f} fps' if self.fps else 'no frame rate'}"
            f"{f' ({rate_from})' if rate and not spec.fps else ''}, spacing "
            f"{spacing if spacing else 'unknown'}"
            f"{f' ({spacing_from})' if spacing_from and not spec.pixel_spacing_mm else ''}",
            level="info",
        )

    def _make_cache(self) -> list[tuple[np.ndarray, str] | None] | None:
        """Room for every decoded frame of a looping cine that fits `cache_mb`, else None."""
        if not self.spec.loop or self.frames < 2:
            return None
        channels = 1 if self.photometric in MONOCHROME else 3
        need_mb = self.frames * int(self.ds.Rows) * int(self.ds.Columns) * channels / 2**20
        if need_mb > self.spec.cache_mb:
            self._event(
                f"dicom source {self.path}: {self.frames} decoded frames need "
                f"{need_mb:.0f} MB, more than cache_mb {self.spec.cache_mb:g}: "
                "decoding every frame again on each loop",
                level="info",
            )
            return None
        return [None] * self.frames

    def _keep(self, index: int, shown: tuple[np.ndarray, str]) -> None:
        if self._cache is not None:
            self._cache[index] = shown

    def _error(self, why: str) -> SourceError:
        return SourceError(f"dicom source: cannot read {self.path}: {one_line(why)}")

    def _read_header(self) -> Any:
        if not self.path.exists():
            raise self._error("no such file")
        if self.path.is_dir():
            raise self._error("is a directory, not a DICOM file")
        try:
            ds = self._pydicom.dcmread(self.path, stop_before_pixels=True)
        except self._pydicom.errors.InvalidDicomError:
            raise self._error("not a DICOM file (no 'DICM' file preamble)") from None
        except OSError as e:
            raise self._error(e.strerror or str(e)) from None
        except Exception as e:  # pydicom raises many types for a damaged header
            raise self._error(f"damaged DICOM header ({type(e).__name__}: {e})") from None
        for key in ("Rows", "Columns"):
            if not isinstance(ds.get(key), int) or ds.get(key) <= 0:
                raise self._error(
                    f"no image: {key} is missing or 0 (SOP class {ds.get('SOPClassUID', '?')})"
                )
        return ds

    def _decode_raw(self, index: int) -> np.ndarray:
        try:
            return self._pixel_array(str(self.path), index=index, as_rgb=True)
        except Exception as e:  # decoder errors come in many types
            syntax = getattr(getattr(self.ds, "file_meta", None), "TransferSyntaxUID", None)
            name = getattr(syntax, "name", "unknown transfer syntax")
            raise self._error(
                f"frame {index} of {self.frames} ({name}) cannot be decoded: "
                f"{type(e).__name__}: {e}"
            ) from None

    def _display(self, arr: np.ndarray, index: int) -> tuple[np.ndarray, str]:
        """(image, pixel_format) for frame `index`'s decoded pixels."""
        if self.photometric in MONOCHROME and arr.ndim == 2:
            assert self._window is not None
            return self._window(arr), "gray8"
        if self.photometric == "PALETTE COLOR" and arr.ndim == 2:
            try:
                rgb = self._apply_color_lut(arr, self.ds)
            except Exception as e:
                raise self._error(f"palette lookup failed: {type(e).__name__}: {e}") from None
            bits = 16 if rgb.dtype != np.uint8 else 8
            return to_uint8_rgb(rgb, bits), "rgb8"
        if arr.ndim == 3 and arr.shape[2] == 3:  # RGB, and YBR_* converted by pydicom (as_rgb)
            return to_uint8_rgb(arr, self.bits), "rgb8"
        raise self._error(
            f"frame {index}: {self.photometric or 'no photometric interpretation'} pixels of "
            f"shape {arr.shape} are not supported"
        )

    def read(self) -> Capture | None:
        """The next frame; one that cannot be decoded (a damaged fragment) is skipped, said once
        and counted (`source_damaged`). Frames 0 and the last are decoded at open."""
        if self.closed:
            raise SourceError(f"dicom source {self.path}: read() after close()")
        for _ in range(self.frames):  # at most one pass over frames that cannot be decoded
            if self.index >= self.frames:
                if not self.spec.loop:
                    return None
                self.index = 0
            index = self.index
            self.index += 1
            cached = self._cache[index] if self._cache is not None else None
            if cached is not None:  # a copy: frames are sent without copying, the cache stays
                image, fmt = cached[0].copy(), cached[1]
            elif index == 0 and self._first is not None:
                (image, fmt), self._first = self._first, None
            else:
                try:
                    raw = self._decode_raw(index)
                except SourceError as e:
                    said = index in self._damaged
                    self._damaged.add(index)
                    self._event("" if said else f"{e}: skipped", {"source_damaged": 1})
                    continue
                image, fmt = self._display(raw, index)
                self._keep(index, (image, fmt))
            return Capture(image, fmt, meta={**self._meta, "dicom_frame": index})
        raise SourceError(f"dicom source {self.path}: none of {self.frames} frames can be decoded")

    def close(self) -> None:
        self.closed = True
