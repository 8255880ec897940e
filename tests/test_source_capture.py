"""The OpenCV capture source: video files read back frame by frame, live HTTP streams that stall
and come back, and one-line errors for inputs that cannot open (real files, real sockets)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.frame import Frame
from stream.sinks import ViewerSink, ViewerSpec
from stream.sources import SOURCE_TYPES, open_source
from stream.sources.base import SourceError
from stream.sources.capture import CaptureSource, CaptureSpec, classify
from stream.spec import ConfigError, parse_spec

W, H = 160, 120


def pattern(i: int) -> np.ndarray:
    """Frame i: a level that grows with i and a bright square moving right."""
    img = np.full((H, W, 3), (20 + 9 * i) % 200, np.uint8)
    x = 4 + 6 * i
    img[40:80, x : x + 30] = (250, 200, 30)
    return img


def write_video(path: Path, n: int, fps: float, fourcc: str) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    frames = [pattern(i) for i in range(n)]
    for f in frames:
        writer.write(f)
    writer.release()
    return frames


def read_all(source: CaptureSource, limit: int = 1000) -> list[np.ndarray]:
    out = []
    while len(out) < limit and (cap := source.read()) is not None:
        out.append(cap.image)
    return out


@pytest.mark.parametrize("name, fourcc", [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_file_reads_back_frame_by_frame(tmp_path: Path, name: str, fourcc: str) -> None:
    original = write_video(tmp_path / name, 24, 25.0, fourcc)
    source = CaptureSource(CaptureSpec(input=str(tmp_path / name)))
    try:
        assert source.fps == pytest.approx(25.0)
        assert not source.live and not source.self_paced  # the grab stage paces a file
        frames = read_all(source)
    finally:
        source.close()
    assert len(frames) == len(original)
    for i, got in enumerate(frames):
        assert got.shape == (H, W, 3) and got.dtype == np.uint8
        err = [np.abs(got.astype(int) - o.astype(int)).mean() for o in original]
        assert err[i] < 4.0, (i, err[i])  # within codec tolerance
        assert int(np.argmin(err)) == i  # and in order: closest to its own original
    assert not np.shares_memory(frames[0], frames[1])  # fresh arrays (they are sent zero-copy)


def test_file_options_rate_unpaced_loop_and_gray(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 5, 12.0, "MJPG")
    fixed = CaptureSource(CaptureSpec(input=str(path), fps=40.0))
    assert fixed.fps == 40.0
    fixed.close()
    fast = CaptureSource(CaptureSpec(input=f"file://{path}", unpaced=True, pixel_format="gray8"))
    assert fast.self_paced and fast.fps == pytest.approx(12.0)
    frames = read_all(fast)
    assert len(frames) == 5 and frames[0].shape == (H, W)
    fast.close()
    looped = CaptureSource(CaptureSpec(input=str(path), loop=True))
    frames = read_all(looped, limit=13)
    events = looped.pop_events()
    looped.close()
    assert len(frames) == 13
    assert np.abs(frames[5].astype(int) - frames[0].astype(int)).mean() < 2  # started again
    assert sum(e.counts.get("source_loops", 0) for e in events) == 2


def test_a_damaged_stretch_of_a_file_is_skipped_and_counted(tmp_path: Path) -> None:
    """Frame 8 of an MPEG-4 file without its start code: OpenCV's read fails there, and the
    source used to take that for the end (a looping file replayed its first third, saying only
    'looping'). Now the undecodable frame is skipped, counted and said once per place."""
    good = tmp_path / "clip.mp4"
    original = write_video(good, 24, 12.0, "mp4v")
    data = bytearray(good.read_bytes())
    vops = [i for i in range(len(data)) if data.startswith(b"\x00\x00\x01\xb6", i)]
    assert len(vops) == 24  # one MPEG-4 video object plane (a frame) each
    data[vops[8] : vops[8] + 4] = b"\xff" * 4
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    plain = cv2.VideoCapture(str(damaged))
    readable = 0
    while plain.read()[0]:
        readable += 1
    plain.release()
    assert readable == 8  # what OpenCV alone reads before it stops

    source = CaptureSource(CaptureSpec(input=str(damaged), unpaced=True, loop=True))
    frames = read_all(source, limit=48)
    events = source.pop_events()
    source.close()
    counts: Counter[str] = Counter()
    for e in events:
        counts.update(e.counts)
    assert counts["source_loops"] == 2 and counts["source_damaged"] == 2  # 23 frames a pass
    said = [e.message for e in events if e.counts.get("source_damaged")]
    assert said == ["capture source " + str(damaged) + ": frame 8 of 24 undecodable (a damaged "
                    "file?): skipped", ""]  # said once, counted at every pass
    for i, want in ((7, 7), (8, 9), (22, 23), (23, 0), (31, 9)):  # frame 8 is not among them
        err = [np.abs(frames[i].astype(int) - o.astype(int)).mean() for o in original]
        assert int(np.argmin(err)) == want, (i, err)


def test_a_file_undecodable_to_its_end_says_how_much_was_lost(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 24, 12.0, "mp4v")
    data = bytearray(path.read_bytes())
    vops = [i for i in range(len(data)) if data.startswith(b"\x00\x00\x01\xb6", i)]
    for at in vops[20:]:  # frames 20-23 lose their start codes
        data[at : at + 4] = b"\xff" * 4
    path.write_bytes(bytes(data))
    source = CaptureSource(CaptureSpec(input=str(path), unpaced=True))
    assert len(read_all(source)) == 20
    events = [e for e in source.pop_events() if e.counts.get("source_damaged")]
    source.close()
    assert [(e.message.split(": ", 1)[1], e.counts) for e in events] == [
        (
            "frames 20-23 of the 24 the file states undecodable: taken to end at frame 20, 4 "
            "not shown (a damaged or cut file?)",
            {"source_damaged": 4},
        )
    ]


def test_classify_inputs() -> None:
    assert classify(0).kind == "device" and classify("2").arg == 2
    assert classify("/dev/video1").kind == "device"
    assert classify("rtsp://cam/stream").kind == "url"
    assert classify("http://host:8080/x.mjpg").kind == "url"
    assert classify("videotestsrc ! videoconvert ! appsink").kind == "pipeline"
    assert classify("file:///data/a.mp4") == classify("file:///data/a.mp4")
    assert classify("file:///data/a.mp4").arg == "/data/a.mp4"
    assert classify("clips/a.mp4").kind == "file"


def test_registered_and_config_errors_name_the_key() -> None:
    assert SOURCE_TYPES["capture"][0] is CaptureSpec
    with pytest.raises(ConfigError, match=r"^src\.input: expected a device"):
        parse_spec(CaptureSpec, {}, "src")
    with pytest.raises(ConfigError, match=r"^src\.fourcc: expected 4 ASCII"):
        parse_spec(CaptureSpec, {"input": 0, "fourcc": "MJPEG"}, "src")
    with pytest.raises(ConfigError, match=r"^src\.pixel_spacing_mm: pixel_spacing_mm must be"):
        parse_spec(CaptureSpec, {"input": 0, "pixel_spacing_mm": [0, 1]}, "src")


def _one_line_error(spec: CaptureSpec) -> tuple[str, float]:
    t0 = time.monotonic()
    with pytest.raises(SourceError) as err:
        CaptureSource(spec)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("capture source: cannot open ")
    return message, time.monotonic() - t0


def test_inputs_that_cannot_open_give_one_line(tmp_path: Path) -> None:
    msg, _ = _one_line_error(CaptureSpec(input=str(tmp_path / "missing.mp4")))
    assert msg.endswith("missing.mp4: no such file")
    msg, _ = _one_line_error(CaptureSpec(input=str(tmp_path)))
    assert "is a directory" in msg
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    msg, _ = _one_line_error(CaptureSpec(input=str(junk)))
    assert "junk.mp4: OpenCV cannot decode it" in msg
    msg, _ = _one_line_error(CaptureSpec(input=97))
    assert "device 97: no such device" in msg


def test_unreachable_rtsp_url_fails_fast(refused_port: int) -> None:
    port = refused_port
    msg, elapsed = _one_line_error(CaptureSpec(input=f"rtsp://127.0.0.1:{port}/x"))
    assert (
        msg
        == f"capture source: cannot open rtsp://127.0.0.1:{port}/x: connection refused by 127.0.0.1:{port}"
    )
    assert elapsed < 2.0  # refused at once, not after an open timeout: a sanity bound


def test_silent_rtsp_server_is_bounded_by_the_open_timeout() -> None:
    """A server that accepts the connection and then says nothing: only the timeout ends it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        msg, elapsed = _one_line_error(
            CaptureSpec(input=f"rtsp://127.0.0.1:{port}/live", open_timeout_s=0.3)
        )
    assert f"127.0.0.1:{port} answered but no video stream opened" in msg
    assert 0.25 < elapsed < 3.0, elapsed  # the 0.3 s timeout ends it; 3 s: generous for a loaded host


class MjpegServer:
    """A live MJPEG-over-HTTP camera (the project's viewer sink) on `port` (0: a free one, read
    back as `.port`), fed by a thread with frames of a constant `level`."""

    def __init__(self, port: int, level: int) -> None:
        self.sink = ViewerSink(ViewerSpec(port=port), "camera")
        self.port = self.sink.port
        self.level = level
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        seq = 0
        while not self.stop.is_set():
            img = np.full((H, W, 3), self.level, np.uint8)
            self.sink.write(img, Frame("cam", seq, 0, 0, img[:1, :1, 0]))
            seq += 1
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sink.close()


def _read_until_level(source: CaptureSource, level: int, timeout: float) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cap = source.read()
        assert cap is not None
        if abs(int(cap.image.mean()) - level) < 10:
            return int(cap.image.mean())
    pytest.fail(f"no frame of level {level} within {timeout} s")


def test_live_stream_that_stalls_is_reopened_and_the_gap_reported() -> None:
    camera = MjpegServer(0, 60)
    camera_port = camera.port
    url = f"http://127.0.0.1:{camera_port}/stream.mjpg"
    source = None
    try:
        source = CaptureSource(
            CaptureSpec(
                input=url, read_timeout_s=0.5, open_timeout_s=2.0, backoff_s=0.1, gap_ms=300.0
            )
        )
        assert source.live and source.self_paced
        _read_until_level(source, 60, 5)
        camera.close()  # the camera goes away ...
        time.sleep(0.5)  # the scenario: gone for half a second (the outage the gap must report)
        camera = MjpegServer(camera_port, 180)  # ... and comes back on its port, other frames
        _read_until_level(source, 180, 10)
        counts: Counter[str] = Counter()
        messages = []
        for ev in source.pop_events():
            counts.update(ev.counts)
            messages.append(ev.message)
    finally:
        camera.close()
        if source is not None:
            source.close()
    assert counts["source_stalls"] >= 1, messages
    assert counts["source_reopens"] >= 1, messages
    assert counts["source_gaps"] >= 1 and counts["source_gap_ms"] >= 450, (counts, messages)
    assert any("reopening" in m for m in messages) and any("gap" in m for m in messages)


def test_live_read_returns_none_promptly_when_asked_to_stop() -> None:
    camera = MjpegServer(0, 90)
    source = CaptureSource(
        CaptureSpec(input=f"http://127.0.0.1:{camera.port}/stream.mjpg", read_timeout_s=0.5)
    )
    camera.close()  # no more frames: read() would wait for the reopen
    stop = threading.Event()
    source.should_stop = stop.is_set
    try:
        while source.read() is not None and not stop.is_set():
            stop.set()  # the first frame may still be waiting; then ask to stop
        t0 = time.monotonic()
        assert source.read() is None
        # not the 0.5 s read timeout, nor a reopen: a sanity bound
        assert time.monotonic() - t0 < 0.5
    finally:
        t0 = time.monotonic()
        source.close()
        # a sanity bound: close gives a stuck reader thread up to 6.5 s (read + open timeout + 1 s)
        assert time.monotonic() - t0 < 5.0


def test_open_source_builds_it_from_a_config_section(tmp_path: Path) -> None:
    write_video(tmp_path / "c.avi", 3, 10.0, "MJPG")
    source = open_source({"type": "capture", "input": str(tmp_path / "c.avi")}, "stages[0].source")
    try:
        assert isinstance(source, CaptureSource) and len(read_all(source)) == 3
    finally:
        source.close()
