"""The image folder source: natural order, set rate, loop, unreadable files counted."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.sources import SOURCE_TYPES
from stream.sources.base import SourceError
from stream.sources.folder import FolderSource, FolderSpec


def _write(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        img = np.full((32, 48, 3), 10 * (i + 1), np.uint8)
        img[:, :, 0] = 0  # colour, so it stays bgr8
        assert cv2.imwrite(str(folder / name), img)


def test_images_in_natural_order_at_the_set_rate(tmp_path: Path) -> None:
    _write(tmp_path, ["f1.png", "f2.png", "f10.png", "f9.jpg"])
    (tmp_path / "notes.txt").write_text("not an image")
    source = FolderSource(FolderSpec(path=str(tmp_path), fps=12.5))
    assert SOURCE_TYPES["folder"][0] is FolderSpec
    assert source.fps == 12.5
    names = []
    while (cap := source.read()) is not None:
        assert cap.pixel_format == "bgr8" and cap.image.shape == (32, 48, 3)
        names.append(cap.meta["file"])
    assert names == ["f1.png", "f2.png", "f9.jpg", "f10.png"]


def test_pattern_loop_gray_and_geometry(tmp_path: Path) -> None:
    _write(tmp_path, ["a_1.png", "a_2.png", "b_1.png"])
    spec = FolderSpec(
        path=str(tmp_path),
        pattern="a_*.png",
        loop=True,
        pixel_format="gray8",
        pixel_spacing_mm=[0.1, 0.1],
    )
    source = FolderSource(spec)
    caps = [source.read() for _ in range(5)]
    assert [c.meta["file"] for c in caps] == ["a_1.png", "a_2.png", "a_1.png", "a_2.png", "a_1.png"]
    assert caps[0].pixel_format == "gray8" and caps[0].image.ndim == 2
    assert caps[0].meta["pixel_spacing_mm"] == [0.1, 0.1]


def test_unreadable_image_is_skipped_and_counted(tmp_path: Path) -> None:
    _write(tmp_path, ["1.png", "3.png"])
    (tmp_path / "2.png").write_bytes(b"\x89PNG broken")
    source = FolderSource(FolderSpec(path=str(tmp_path)))
    files = [source.read().meta["file"], source.read().meta["file"]]
    assert files == ["1.png", "3.png"] and source.read() is None
    events = source.pop_events()
    assert [e.counts for e in events] == [{"source_unreadable": 1}]
    assert "2.png" in events[0].message


def test_folders_that_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^folder source: cannot open .*nope: no such folder$"):
        FolderSource(FolderSpec(path=str(tmp_path / "nope")))
    with pytest.raises(SourceError, match="no images matching"):
        FolderSource(FolderSpec(path=str(tmp_path)))
    (tmp_path / "x.png").write_bytes(b"junk")
    source = FolderSource(FolderSpec(path=str(tmp_path), loop=True))
    with pytest.raises(SourceError, match="unreadable images in a row"):
        source.read()
