"""The `roi:` key of a grab stage: where the imaging region of its frames comes from.

roi: default             # DICOM regions when the file has usable ones, else auto
roi: auto                # detect the moving imaging area (stream.roi.detect)
roi: dicom               # the file's SequenceOfUltrasoundRegions (an error if it has none)
roi: none                # no region: meta["roi"] is not set, overlays are not clipped
roi: [x0, y0, x1, y1]    # a rectangle, first/last pixel column and row inside it
roi: [[x, y], ...]       # a polygon of 3 or more points
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from stream.roi.region import check_polygon, rect_polygon
from stream.spec import ConfigError

Mode = Literal["default", "auto", "dicom", "none", "config"]
NAMED = ("default", "auto", "dicom", "none")


@dataclass(frozen=True)
class RoiSetting:
    """A validated `roi:` value: the mode, and the polygon for `config`."""

    mode: Mode
    polygon: tuple[tuple[float, float], ...] | None = None


def parse_roi_setting(value: Any, where: str) -> RoiSetting:
    """Validate a `roi:` value (see the module doc); ConfigError naming `where` otherwise."""
    expected = (
        f"expected one of {', '.join(repr(n) for n in NAMED)}, a rectangle [x0, y0, x1, y1] "
        "or a polygon [[x, y], ...]"
    )
    if isinstance(value, str):
        if value not in NAMED:
            raise ConfigError(f"{where}: {expected}, got {value!r:.40}")
        return RoiSetting(value)  # type: ignore[arg-type]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {expected}, got {value!r:.60}")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        if len(value) != 4:
            raise ConfigError(
                f"{where}: a rectangle is [x0, y0, x1, y1], four numbers, got {len(value)}"
            )
        x0, y0, x1, y1 = (float(v) for v in value)
        if not (0 <= x0 < x1 and 0 <= y0 < y1) or max(x1, y1) > 100000:
            raise ConfigError(
                f"{where}: rectangle [x0, y0, x1, y1] needs 0 <= x0 < x1 and 0 <= y0 < y1 "
                f"(pixels), got {value!r:.60}"
            )
        return RoiSetting("config", rect_polygon(x0, y0, x1, y1))
    try:
        polygon = check_polygon(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if any(x < 0 or y < 0 for x, y in polygon):
        raise ConfigError(f"{where}: polygon points must be >= 0 (pixels), got {value!r:.60}")
    return RoiSetting("config", polygon)
