"""The imaging region a DICOM ultrasound file defines: its SequenceOfUltrasoundRegions.

Only 2D regions (RegionSpatialFormat 1) of tissue (RegionDataType 1) or colour flow (2) count;
M-mode (format 2), spectral Doppler (3), waveforms such as the ECG (4), graphics (5) and data
types such as the gray bar (13) or colour bar (14) are not places to draw on. Of the usable
regions the largest is taken (a colour-flow box lies inside its tissue region; in a dual view
the other view gets no overlay: the safe side). A region's corners are inclusive pixel
positions; a corner one past the last column or row (x1 == Columns, seen in real files) is
clamped to the image, a region further outside it (a resized file) is ignored with a warning.
"""

from __future__ import annotations

from typing import Any

from stream.roi.region import Region, rect_polygon

SPATIAL_2D = 1  # RegionSpatialFormat
TISSUE, COLOR_FLOW = 1, 2  # RegionDataType
DRAWABLE_TYPES = (TISSUE, COLOR_FLOW)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def dicom_region(ds: Any, rows: int, cols: int) -> tuple[Region | None, list[str]]:
    """(the largest usable 2D tissue / colour-flow region, warnings) of dataset `ds`."""
    warnings: list[str] = []
    best: tuple[int, Region] | None = None
    usable = 0
    for i, r in enumerate(ds.get("SequenceOfUltrasoundRegions") or []):
        if (
            _int(r.get("RegionSpatialFormat")) != SPATIAL_2D
            or _int(r.get("RegionDataType")) not in DRAWABLE_TYPES
        ):
            continue
        corners = [
            _int(r.get(k))
            for k in (
                "RegionLocationMinX0",
                "RegionLocationMinY0",
                "RegionLocationMaxX1",
                "RegionLocationMaxY1",
            )
        ]
        if any(c is None for c in corners):
            warnings.append(f"ultrasound region {i}: corners missing, ignored")
            continue
        x0, y0, x1, y1 = (int(c) for c in corners if c is not None)
        if x1 > cols or y1 > rows or x0 < 0 or y0 < 0 or x0 >= x1 or y0 >= y1:
            warnings.append(
                f"ultrasound region {i} ({x0}, {y0})-({x1}, {y1}) does not fit the "
                f"{cols}x{rows} image (a resized file?): ignored"
            )
            continue
        usable += 1
        x1, y1 = min(x1, cols - 1), min(y1, rows - 1)
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        if best is None or area > best[0]:
            best = (area, Region("dicom", rect_polygon(x0, y0, x1, y1)))
    if usable > 1:
        warnings.append(
            f"{usable} 2D ultrasound regions: overlays only inside the largest "
            "(a colour-flow box inside it is covered; a second view is not)"
        )
    return (best[1] if best else None), warnings
