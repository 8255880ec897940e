"""Image geometry carried in `Frame.meta`: pixel spacing and patient orientation, validated.

- `pixel_spacing_mm`: [row_mm, col_mm], the distance between row centres and between column
  centres in millimetres (DICOM PixelSpacing order), both finite and > 0.
- `pixel_spacing_suspect`: a one-line reason, present when the source itself doubts the spacing
  it sends (a DICOM ultrasound region that lies outside the image: a resized copy). Renderers
  then draw no scale bar but a "spacing unverified" note, and OpenIGTLink withholds it.
- `patient_orientation`: [row_direction, column_direction], the patient directions in which the
  column index and the row index increase (DICOM PatientOrientation), each 1-3 letters of
  A/P (anterior/posterior), L/R (left/right), H/F (head/foot), e.g. ["L", "P"].

Sources put these keys into `Capture.meta`; renderers read them back with the `*_from_meta`
functions, which raise ValueError with a one-line reason for a malformed value.
"""

from __future__ import annotations

import math
from typing import Any

SPACING_KEY = "pixel_spacing_mm"
SPACING_SUSPECT_KEY = "pixel_spacing_suspect"
ORIENTATION_KEY = "patient_orientation"
OPPOSITE = {"A": "P", "P": "A", "L": "R", "R": "L", "H": "F", "F": "H"}
MAX_SPACING_MM = 1000.0


def check_spacing(value: Any) -> tuple[float, float]:
    """(row_mm, col_mm) from a 2-list of finite numbers in (0, 1000]; ValueError otherwise."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) and 0 < v <= MAX_SPACING_MM for v in value)
    ):
        raise ValueError(
            f"{SPACING_KEY} must be [row_mm, col_mm], two numbers in (0, {MAX_SPACING_MM:g}], "
            f"got {value!r:.60}"
        )
    return float(value[0]), float(value[1])


def check_orientation(value: Any) -> tuple[str, str]:
    """(row_direction, column_direction), e.g. ("L", "P"); ValueError otherwise."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(
            isinstance(v, str) and 1 <= len(v) <= 3 and all(c in OPPOSITE for c in v.upper())
            for v in value
        )
    ):
        raise ValueError(
            f"{ORIENTATION_KEY} must be two directions of 1-3 letters from A P L R H F, "
            f"got {value!r:.60}"
        )
    return value[0].upper(), value[1].upper()


def opposite(direction: str) -> str:
    """The opposite patient direction: "LA" -> "RP"."""
    return "".join(OPPOSITE[c] for c in direction.upper())


def spacing_from_meta(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The frame's pixel spacing, None if it has none; ValueError if it is malformed."""
    value = meta.get(SPACING_KEY)
    return None if value is None else check_spacing(value)


def spacing_suspect_from_meta(meta: dict[str, Any]) -> str | None:
    """Why the source doubts the frame's pixel spacing, or None if it does not."""
    value = meta.get(SPACING_SUSPECT_KEY)
    if value is None or value is False:
        return None
    return " ".join(str(value).split()) or "unverified"


def orientation_from_meta(meta: dict[str, Any]) -> tuple[str, str] | None:
    """The frame's patient orientation, None if it has none; ValueError if it is malformed."""
    value = meta.get(ORIENTATION_KEY)
    return None if value is None else check_orientation(value)


def geometry_meta(
    spacing: list[float] | tuple[float, float] | None, orientation: list[str] | None
) -> dict[str, Any]:
    """The meta entries for a source's known spacing and orientation (either may be None)."""
    meta: dict[str, Any] = {}
    if spacing is not None:
        meta[SPACING_KEY] = list(check_spacing(spacing))
    if orientation is not None:
        meta[ORIENTATION_KEY] = list(check_orientation(orientation))
    return meta


def validate_geometry_fields(spec: Any, where: str) -> None:
    """Config check for a source spec's optional `pixel_spacing_mm` and `orientation` keys."""
    from .spec import ConfigError

    for key, check in (("pixel_spacing_mm", check_spacing), ("orientation", check_orientation)):
        value = getattr(spec, key)
        if value is not None:
            try:
                check(value)
            except ValueError as e:
                raise ConfigError(f"{where}.{key}: {e}") from None
