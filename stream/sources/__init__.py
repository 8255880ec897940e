"""Frame sources for the grab stage, and the registry that opens one from its config section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stream.sources.base import Capture, Source, SourceError
from stream.sources.capture import CaptureSource, CaptureSpec
from stream.sources.dicom import DicomSource, DicomSpec
from stream.sources.endoscopy import EndoscopySource, EndoscopySpec
from stream.sources.folder import FolderSource, FolderSpec
from stream.sources.phantom import PhantomSource, PhantomSpec
from stream.sources.replay import ReplaySource, ReplaySpec

# type name -> (spec dataclass parsed from the rest of the section, factory taking that spec)
SOURCE_TYPES: dict[str, tuple[type, Callable[[Any], Source]]] = {
    "phantom": (PhantomSpec, PhantomSource),
    "endoscopy": (EndoscopySpec, EndoscopySource),
    "capture": (CaptureSpec, CaptureSource),
    "dicom": (DicomSpec, DicomSource),
    "folder": (FolderSpec, FolderSource),
    "replay": (ReplaySpec, ReplaySource),
}


def open_source(raw: dict, where: str) -> Source:
    """Open the source described by config section `raw` (`type:` plus that type's keys).

    `where` is the section's dotted path (e.g. "stages[0].source"), used in every error.
    """
    from stream.plugins import parse_source

    return parse_source(raw, where).open()


__all__ = ["SOURCE_TYPES", "Capture", "Source", "SourceError", "open_source"]
