"""The render stage's outputs on a real DICOM cine through whole `medstream run` graphs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from stream.recording import RecordingReader

from .test_io_pipeline import ECHO, graph, pydicom, run

pytestmark = pytest.mark.slow  # `medstream run` of a real cine

CARDIAC_FRAME_TIME_MS = 54.23  # 18.44 fps, the rate of a real cardiac cine


def slow_echo(tmp_path: Path) -> Path:
    """pydicom's echo cine, its FrameTime set to a cardiac cine's 54.23 ms (18.44 fps)."""
    ds = pydicom.dcmread(ECHO)
    ds.FrameTime = CARDIAC_FRAME_TIME_MS
    path = tmp_path / "echo_18fps.dcm"
    ds.save_as(path)
    return path


def test_video_and_recording_carry_the_cines_own_frame_rate(tmp_path: Path) -> None:
    video, rec = tmp_path / "echo.avi", tmp_path / "echo.msrec"
    config = graph(
        tmp_path,
        {"type": "dicom", "path": str(slow_echo(tmp_path))},
        [
            {"type": "video", "path": str(video), "fourcc": "MJPG"},
            {"type": "recorder", "path": str(rec)},
        ],
        mode="lossless",
    )
    code, out, _ = run(config, tmp_path / "report.json")
    assert code == 0, out
    assert "18.44 fps (FrameTime)" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames"]["delivered"] == 30, report["frames"]
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert fps == pytest.approx(1000 / CARDIAC_FRAME_TIME_MS, rel=1e-3)  # not the default 30
    assert frames == 30
    with RecordingReader(rec) as reader:
        assert reader.header["source_fps"] == pytest.approx(1000 / CARDIAC_FRAME_TIME_MS)
        assert len(reader.frames) == 30
