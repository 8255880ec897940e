"""Image folder source: the images of one folder, in natural sort order, at a set rate."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from stream.geometry import geometry_meta, validate_geometry_fields
from stream.sources.base import Capture, EventLog, SourceError
from stream.spec import ConfigError, bounded

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
MAX_BAD_IN_A_ROW = 100  # this many unreadable files in a row end the source with an error


@dataclass(frozen=True)
class FolderSpec:
    """The `source:` section for `type: folder`."""

    path: str = bounded("", doc="folder of images (png, jpg, bmp, tif, pgm, ppm, webp)")
    pattern: str = bounded("*", doc="glob of the file names to use, e.g. 'frame_*.png'")
    fps: float = bounded(10.0, 0.01, 1000.0, doc="frames per second")
    loop: bool = bounded(False, doc="start again after the last image")
    pixel_format: Literal["auto", "bgr8", "gray8"] = bounded(
        "auto", doc="auto: grey files as gray8, colour files as bgr8"
    )
    pixel_spacing_mm: list[float] | None = bounded(None, doc="[row_mm, col_mm] of the images")
    orientation: list[str] | None = bounded(
        None, doc="patient directions of increasing column and row, e.g. [L, P]"
    )

    def validate(self, where: str) -> None:
        if not self.path:
            raise ConfigError(f"{where}.path: expected a folder, got ''")
        validate_geometry_fields(self, where)


def natural_key(path: Path) -> list[Any]:
    """Sort key that orders frame2 before frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(folder: Path, pattern: str) -> list[Path]:
    """Image files in `folder` matching `pattern`, in natural order."""
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=natural_key)


class FolderSource(EventLog):
    """One image per read, in order; an unreadable file is skipped and counted."""

    def __init__(self, spec: FolderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.folder = Path(spec.path)
        if not self.folder.is_dir():
            why = "no such folder" if not self.folder.exists() else "not a folder"
            raise SourceError(f"folder source: cannot open {self.folder}: {why}")
        self.files = list_images(self.folder, spec.pattern)
        if not self.files:
            raise SourceError(
                f"folder source: cannot open {self.folder}: no images matching "
                f"{spec.pattern!r} (suffixes {', '.join(IMAGE_SUFFIXES)})"
            )
        self.fps: float | None = spec.fps
        self.index = 0
        self.closed = False
        self._meta = geometry_meta(spec.pixel_spacing_mm, spec.orientation)

    def _load(self, path: Path) -> tuple[np.ndarray, str] | None:
        flags = {
            "auto": cv2.IMREAD_ANYCOLOR,
            "bgr8": cv2.IMREAD_COLOR,
            "gray8": cv2.IMREAD_GRAYSCALE,
        }[self.spec.pixel_format]
        image = cv2.imread(str(path), flags)
        if image is None or image.dtype != np.uint8:
            return None
        if image.ndim == 2:
            return image, "gray8"
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return image, "bgr8"

    def read(self) -> Capture | None:
        if self.closed:
            raise SourceError(f"folder source {self.folder}: read() after close()")
        bad = 0
        while True:
            if self.index >= len(self.files):
                if not self.spec.loop or bad >= len(self.files):
                    return None
                self.index = 0
            path = self.files[self.index]
            self.index += 1
            loaded = self._load(path)
            if loaded is not None:
                image, fmt = loaded
                return Capture(image, fmt, meta={**self._meta, "file": path.name})
            bad += 1
            why = f"folder source: skipped {path}: not a readable 8-bit image"
            self._event(why, {"source_unreadable": 1})
            if bad >= min(MAX_BAD_IN_A_ROW, len(self.files)):
                raise SourceError(
                    f"folder source {self.folder}: {bad} unreadable images in a row; stopping"
                )

    def close(self) -> None:
        self.closed = True
