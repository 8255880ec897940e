"""What a DICOM dataset says about its frames: rate, pixel spacing, orientation, and how to turn
its decoded pixels into a displayable gray8 or rgb8 image.

These functions take a pydicom `Dataset` (read with or without its pixel data) and never raise
for a missing attribute: they return None, so the source can fall back to its config.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CM_UNITS = 3  # PhysicalUnitsX/YDirection: 3 = cm
SPATIAL_2D = 1  # RegionSpatialFormat: 1 = 2D (tissue or flow)


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def frame_rate(ds: Any) -> tuple[float | None, str]:
    """(frames per second, the attribute it came from) or (None, "")."""
    frame_time = _number(ds.get("FrameTime"))
    if frame_time is not None:
        return 1000.0 / frame_time, "FrameTime"
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(vector) > 1:
        times = [t for t in (_number(v) for v in list(vector)[1:]) if t is not None]
        if times:
            return 1000.0 / (sum(times) / len(times)), "FrameTimeVector (mean)"
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _number(ds.get(key))
        if rate is not None:
            return rate, key
    return None, ""


def _spacing_pair(value: Any) -> list[float] | None:
    if value is None or len(value) != 2:
        return None
    pair = [_number(v) for v in value]
    return None if None in pair else [float(v) for v in pair if v is not None]


def pixel_spacing(ds: Any) -> tuple[list[float] | None, str, str]:
    """([row_mm, col_mm], the attribute it came from, a warning) or (None, "", "").

    Order: PixelSpacing; the shared functional groups' PixelMeasuresSequence (enhanced
    multi-frame); the first 2D ultrasound region in cm (PhysicalDeltaY/X, converted to mm). The
    warning is set when that region does not lie inside the image (a file resized without
    updating its regions: the spacing may not belong to these pixels).
    """
    spacing = _spacing_pair(ds.get("PixelSpacing"))
    if spacing is not None:
        return spacing, "PixelSpacing", ""
    for group in ds.get("SharedFunctionalGroupsSequence") or []:
        for measures in group.get("PixelMeasuresSequence") or []:
            spacing = _spacing_pair(measures.get("PixelSpacing"))
            if spacing is not None:
                return spacing, "PixelMeasuresSequence", ""
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        if (
            region.get("RegionSpatialFormat") == SPATIAL_2D
            and region.get("PhysicalUnitsXDirection") == CM_UNITS
            and region.get("PhysicalUnitsYDirection") == CM_UNITS
        ):
            dy, dx = _number(region.get("PhysicalDeltaY")), _number(region.get("PhysicalDeltaX"))
            if dy is None or dx is None:
                continue
            x1, y1 = region.get("RegionLocationMaxX1"), region.get("RegionLocationMaxY1")
            rows, cols = ds.get("Rows"), ds.get("Columns")
            warning = ""
            if isinstance(x1, int) and isinstance(y1, int) and rows and cols:
                # x1/y1 == Columns/Rows is a common vendor convention (an exclusive bound)
                if x1 > cols or y1 > rows:
                    warning = (
                        f"ultrasound region reaches ({x1}, {y1}), outside the {cols}x{rows} "
                        "image: its spacing may not belong to these pixels"
                    )
            return [dy * 10.0, dx * 10.0], "SequenceOfUltrasoundRegions", warning
    return None, "", ""


def patient_orientation(ds: Any) -> list[str] | None:
    """PatientOrientation as two direction strings, if present and well formed."""
    value = ds.get("PatientOrientation")
    if value is None or len(value) != 2:
        return None
    out = [str(v).strip().upper() for v in value]
    if all(out) and all(all(c in "APLRHF" for c in v) and len(v) <= 3 for v in out):
        return out
    return None


def frame_count(ds: Any) -> int:
    """NumberOfFrames (1 when absent or malformed)."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _first(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = value[0] if not isinstance(value, (int, float, str)) else value
        x = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return x if math.isfinite(x) else None


class GrayWindow:
    """Maps monochrome stored values to gray8: rescale slope/intercept, then a linear window
    (the file's first WindowCenter/Width, else the range of the first frame), MONOCHROME1
    inverted."""

    def __init__(self, ds: Any, first_frame: np.ndarray) -> None:
        self.slope = _first(ds.get("RescaleSlope")) or 1.0
        self.intercept = _first(ds.get("RescaleIntercept")) or 0.0
        self.invert = ds.get("PhotometricInterpretation") == "MONOCHROME1"
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        self.passthrough = (
            first_frame.dtype == np.uint8
            and center is None
            and self.slope == 1.0
            and self.intercept == 0.0
        )
        if center is not None and width is not None and width > 0:
            self.lo, self.hi = center - width / 2, center + width / 2
        else:
            values = first_frame.astype(np.float64) * self.slope + self.intercept
            self.lo, self.hi = float(values.min()), float(values.max())
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.passthrough:
            out = np.ascontiguousarray(frame, dtype=np.uint8)
        else:
            x = frame.astype(np.float32) * self.slope + self.intercept
            x = (x - self.lo) * (255.0 / (self.hi - self.lo))
            out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
        return 255 - out if self.invert else out


def to_uint8_rgb(rgb: np.ndarray, bits: int) -> np.ndarray:
    """An RGB array of `bits` per sample (8 or 16) as contiguous uint8."""
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    shift = max(int(bits) - 8, 0)
    return np.ascontiguousarray((rgb.astype(np.uint32) >> shift).clip(0, 255).astype(np.uint8))
