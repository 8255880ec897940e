"""What every source (grabber) gives the grab stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class Capture:
    """One image read from a source, before it becomes a `Frame`.

    `parts` are extra arrays to send with the image (e.g. `truth`: a ground-truth label map);
    `meta` small JSON values (e.g. `pixel_spacing_mm: [row_mm, col_mm]`).
    """

    image: np.ndarray
    pixel_format: str
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class SourceError(RuntimeError):
    """A source that cannot open or read: the message says what, where and why, in one line."""


class Source(Protocol):
    """A frame source. The grab stage paces calls to `read` at the configured rate."""

    fps: float | None  # the source's own frame rate, if it has one (files, DICOM cines)

    def read(self) -> Capture | None:
        """Return the next image, or None at the end of a finite source."""
        ...

    def close(self) -> None: ...
