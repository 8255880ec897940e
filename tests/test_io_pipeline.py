"""Real inputs and outputs through whole `medstream run` graphs (real processes, files, sockets):
the pydicom echo cine at its own rate and spacing, record -> replay, sources that cannot open,
and the browser viewer in headless Chromium."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from stream.recording import RecordingReader

from .helpers import child_port
from .test_pipeline import fetch_jpeg, finish, start_run, viewer_port
from .viewing import browse, chromium, colourful, phantom_recording, screenshot

pytestmark = pytest.mark.slow  # `medstream run` of real inputs and outputs

pydicom = pytest.importorskip("pydicom", reason="pip install 'medstream[dicom]'")
ECHO = Path(pydicom.__file__).parent / "data" / "test_files" / "examples_ybr_color.dcm"


def graph(tmp_path: Path, source: dict, sinks: list[dict], mode: str = "live", **grab) -> Path:
    """grab(source) -> render(sinks): no model needed; render draws what the frames carry."""
    config = {
        "name": "io",
        "budget_ms": 2000,
        "run_dir": str(tmp_path / "run"),
        "links": {"frames": {"endpoint": "ipc://{run_dir}/frames.ipc", "mode": mode}},
        "stages": [
            {"id": "grab", "kind": "grab", "output": "frames", "source": source, **grab},
            {"id": "render", "kind": "render", "input": "frames", "sinks": sinks},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(
    config: Path, report: Path, duration: float = 60, timeout: float = 90
) -> tuple[int, str, float]:
    t0 = time.monotonic()
    sup = start_run(config, report, duration)
    out = finish(sup, timeout)
    return sup.returncode, out, time.monotonic() - t0


def test_echo_cine_streams_at_its_own_rate_and_spacing(tmp_path: Path) -> None:
    rec = tmp_path / "echo.msrec"
    video = tmp_path / "echo.avi"
    config = graph(
        tmp_path,
        {"type": "dicom", "path": str(ECHO)},
        [
            {"type": "recorder", "path": str(rec)},
            {"type": "video", "path": str(video), "fourcc": "MJPG"},
        ],
        mode="lossless",
    )
    code, out, _ = run(config, tmp_path / "report.json")
    assert code == 0, out
    assert "30 frame(s) YBR_FULL_422 320x240, 30.00 fps (FrameTime)" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames"]["captured"] == 30 and report["frames"]["delivered"] == 30, report[
        "frames"
    ]
    assert report["stages"]["grab"]["info"]["fps_target"] == pytest.approx(30.0, rel=1e-3)
    with RecordingReader(rec) as reader:
        frames = list(reader)
    assert len(frames) == 30
    decoded = pydicom.pixels.pixel_array(str(ECHO), as_rgb=True)
    for i, f in enumerate(frames):
        assert f.pixel_format == "rgb8" and np.array_equal(f.image, decoded[i])
        assert f.meta["pixel_spacing_mm"] == pytest.approx([0.5104970559, 0.5104970559])
        assert f.meta["dicom_frame"] == i
    # the file's ultrasound region belongs to its 640x480 original: the detector finds the fan
    assert "ultrasound region 0 (84, 31)-(595, 414) does not fit the 320x240 image" in out
    assert frames[0].meta["roi"] is None and frames[-1].meta["roi"]["source"] == "auto"
    assert report["overlay"]["frames_shown"] == 0  # no model: nothing drawn, nothing withheld
    assert report["overlay"]["frames_suppressed"] == {}
    intervals_ms = np.diff([f.capture_ns for f in frames]) / 1e6
    assert np.median(intervals_ms) == pytest.approx(33.33, abs=2.0), intervals_ms.round(1)
    span_s = (frames[-1].capture_ns - frames[0].capture_ns) / 1e9
    assert span_s == pytest.approx(29 / 30, abs=0.1)  # 30 frames at the file's 30 fps
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 30


def test_record_then_replay_reproduces_frames_and_timing(tmp_path: Path) -> None:
    original = tmp_path / "original.msrec"
    phantom_recording(original, 45)
    copy = tmp_path / "replayed.msrec"
    config = graph(
        tmp_path,
        {"type": "replay", "path": str(original)},
        [{"type": "recorder", "path": str(copy)}],
        mode="lossless",
    )
    code, out, _ = run(config, tmp_path / "report.json")
    assert code == 0, out
    with RecordingReader(original) as a, RecordingReader(copy) as b:
        first, second = list(a), list(b)
    assert len(second) == len(first) == 45
    for x, y in zip(first, second, strict=True):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.parts["mask"], y.parts["mask"])
        assert y.annotations.model == "phantom-truth" and y.meta["replay"]["seq"] == x.seq
    want = np.diff([f.capture_ns for f in first]) / 1e6
    got = np.diff([f.capture_ns for f in second]) / 1e6
    assert np.abs(got - want).max() < 25, np.c_[want, got].round(1).tolist()
    assert np.median(np.abs(got - want)) < 5
    total_want, total_got = want.sum(), got.sum()
    assert abs(total_got - total_want) < 30


@pytest.mark.parametrize(
    "source, line",
    [
        (  # found before any stage starts (stream.preflight), exit 2
            {"type": "capture", "input": "{tmp}/missing.mp4"},
            "medstream: config error: stages[0].source.input: {tmp}/missing.mp4 does not exist "
            "(expected a file)",
        ),
        (  # the grab stage's setup fails: exit 78, not restarted
            {"type": "dicom", "path": "{tmp}/corrupt.dcm"},
            "[grab] ERROR dicom source: cannot read {tmp}/corrupt.dcm: not a DICOM file",
        ),
        (
            {"type": "capture", "input": "rtsp://127.0.0.1:{port}/x"},
            "[grab] ERROR capture source: cannot open rtsp://127.0.0.1:{port}/x: connection "
            "refused by 127.0.0.1:{port}",
        ),
    ],
    ids=["missing-file", "corrupt-dicom", "unreachable-rtsp"],
)
def test_source_that_cannot_open_fails_the_run_quickly_with_one_line(
    tmp_path, source, line, refused_port
) -> None:
    (tmp_path / "corrupt.dcm").write_bytes(b"\x00DICM" * 300)
    values = {"tmp": str(tmp_path), "port": refused_port}
    source = {k: v.format(**values) if isinstance(v, str) else v for k, v in source.items()}
    config = graph(tmp_path, source, [])
    code, out, elapsed = run(config, tmp_path / "report.json", timeout=60)
    assert code != 0, out
    assert line.format(**values) in out, out
    if line.startswith("medstream: config error"):
        assert code == 2 and "started" not in out
    else:
        assert code == 78 and "grab could not start (exit 78" in out and "not restarting" in out
    assert "[tcp @" not in out and "WARN" not in out  # no library noise around the line
    assert elapsed < 20, elapsed


def test_browser_viewer_in_headless_chromium_shows_live_annotated_frames_and_stats(
    tmp_path,
) -> None:
    chromium()
    recording = tmp_path / "scan.msrec"
    phantom_recording(recording, 90, size=256)
    config = graph(
        tmp_path,
        {"type": "replay", "path": str(recording), "loop": True},
        [{"type": "viewer", "port": child_port()}],
    )
    sup = start_run(config, tmp_path / "report.json", duration=60)
    port = viewer_port(config)
    try:
        frame = fetch_jpeg(port)
        assert frame.shape == (256, 256, 3)
        url = f"http://127.0.0.1:{port}/"
        first = screenshot(tmp_path, url, "first.png")
        time.sleep(1.0)  # the scan moves on between the two screenshots
        second = screenshot(tmp_path, url, "second.png")
        dom = browse(tmp_path, url, "--dump-dom").stdout
    finally:
        sup.send_signal(signal.SIGINT)
        out = finish(sup)
    assert sup.returncode == 0, out
    # the live image: where the page shows it, the two screenshots differ (the scan moves)
    y0, x0 = 40, 12  # the <img> sits at the page's top-left, below the header
    a, b = first[y0 : y0 + 256, x0 : x0 + 256], second[y0 : y0 + 256, x0 : x0 + 256]
    assert a.std() > 10 and b.std() > 10, "no image where the page shows it"
    changed = (np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 24).mean()
    assert changed > 0.02, changed
    # annotated: mask overlay colours and the HUD text (the raw scan is grey)
    assert colourful(a) > 0.005 and colourful(b) > 0.005, (colourful(a), colourful(b))
    # the stats: rendered as text right of the image, and present in the page's table
    stats_area = first[y0 : y0 + 256, x0 + 256 + 10 :]
    assert (stats_area.max(axis=2) > 150).sum() > 300, "the stats area is empty"
    assert '<table id="stats">' in dom and "<tr>" in dom
    for key in ("fps", "glass_to_glass_ms.p50", "delivered", "viewer.frames_written"):
        assert f"<td>{key}</td>" in dom, key
