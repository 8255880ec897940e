"""VideoSink: real files written by OpenCV and read back with cv2.VideoCapture."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import stream.sinks.video as video_mod
from stream.frame import Frame
from stream.sinks import SinkError, VideoSink, VideoSpec


def _frame(seq: int) -> Frame:
    return Frame("endo", seq, 0, 0, np.zeros((1, 1), np.uint8))


def _image(seq: int, h: int = 120, w: int = 160) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :, 1] = (seq * 20) % 256
    image.flags.writeable = False
    return image


def _read_back(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot read {path}"
    frames = []
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(image)
    finally:
        cap.release()
    return frames, fps


def test_frames_written_are_read_back(tmp_path):
    path = tmp_path / "rec" / "nested" / "out.mp4"  # the directories do not exist yet
    sink = VideoSink(VideoSpec(path=str(path)), "video-test", source_fps=25.0)
    for seq in range(12):
        sink.write(_image(seq), _frame(seq))
    sink.close()
    frames, fps = _read_back(path)
    assert len(frames) == 12 and sink.frames_written == 12
    assert all(f.shape == (120, 160, 3) for f in frames)
    assert abs(fps - 25.0) < 0.01  # the source's rate when the spec gives none
    assert abs(int(np.median(frames[5][:, :, 1])) - 100) <= 4  # the right frame, in order
    assert sink.drops() == {}


def test_spec_fps_wins_and_default_is_30(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for path, spec_fps, source_fps, want in ((a, 12.0, 25.0, 12.0), (b, None, None, 30.0)):
        sink = VideoSink(VideoSpec(path=str(path), fps=spec_fps), "video-fps", source_fps)
        assert sink.fps == want
        sink.write(_image(0), _frame(0))
        sink.close()
        assert abs(_read_back(path)[1] - want) < 0.01


def test_frames_of_another_size_are_counted_as_bad_size(tmp_path):
    path = tmp_path / "out.mp4"
    sink = VideoSink(VideoSpec(path=str(path)), "video-size")
    for seq in range(5):
        sink.write(_image(seq), _frame(seq))
    for seq in range(5, 8):
        sink.write(_image(seq, 240, 320), _frame(seq))
    sink.close()
    assert sink.drops() == {"bad_size": 3}
    frames, _ = _read_back(path)
    assert len(frames) == 5 and frames[0].shape == (120, 160, 3)


def test_full_queue_drops_are_counted_and_write_never_blocks(tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_writer = cv2.VideoWriter

    class SlowWriter:
        """A real writer whose write() blocks until released (a stalled disk)."""

        def __init__(self, *args):
            self._w = real_writer(*args)

        def isOpened(self):  # OpenCV's name
            return self._w.isOpened()

        def write(self, image):
            entered.set()
            release.wait(10)
            self._w.write(image)

        def release(self):
            self._w.release()

    monkeypatch.setattr(video_mod.cv2, "VideoWriter", SlowWriter)
    path = tmp_path / "out.mp4"
    sink = VideoSink(VideoSpec(path=str(path), queue=3), "video-overflow")
    sink.write(_image(0), _frame(0))
    assert entered.wait(5)  # the writer holds frame 0 and is stuck
    t0 = time.perf_counter()
    for seq in range(1, 6):  # 3 fit in the queue, 2 do not
        sink.write(_image(seq), _frame(seq))
    # a write that waited on the stuck writer would wait for the release (10 s); 0.5 s is a
    # sanity bound for a loaded machine, not a speed target
    assert time.perf_counter() - t0 < 0.5
    assert sink.drops() == {"sink_overflow": 2}
    release.set()
    sink.close()
    assert len(_read_back(path)[0]) == 4


def test_close_is_idempotent_and_write_after_close_is_an_error(tmp_path):
    sink = VideoSink(VideoSpec(path=str(tmp_path / "x.mp4")), "video-close")
    sink.write(_image(0), _frame(0))
    sink.close()
    sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(_image(1), _frame(1))


def test_no_frames_leaves_no_broken_file(tmp_path):
    path = tmp_path / "never.mp4"
    VideoSink(VideoSpec(path=str(path)), "video-empty").close()
    assert not path.exists()


def test_unwritable_paths_are_a_one_line_sink_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    cases = [
        (VideoSpec(path=str(blocker / "out.mp4")), "cannot create its directory"),
        (VideoSpec(path=str(tmp_path)), "is a directory"),
        (VideoSpec(path=str(tmp_path / "out.mp4"), fourcc="zzzz"), "'zzzz'"),
    ]
    for spec, why in cases:
        with pytest.raises(SinkError, match=why) as err:
            VideoSink(spec, "video-bad")
        assert "\n" not in str(err.value) and "video-bad" in str(err.value)
        assert spec.path in str(err.value)


def test_write_rejects_a_non_bgr_image(tmp_path):
    sink = VideoSink(VideoSpec(path=str(tmp_path / "x.mp4")), "video-type")
    try:
        with pytest.raises(ValueError, match="uint8 HxWx3"):
            sink.write(np.zeros((4, 4), np.float32), _frame(0))
    finally:
        sink.close()


def test_a_writer_that_fails_later_is_counted_and_raised_at_close(tmp_path, monkeypatch):
    real_writer = cv2.VideoWriter
    made = []

    def writer_that_opens_only_once(*args):
        made.append(args)
        w = real_writer(*args)
        if len(made) > 1:  # the probe opens; the real writer (disk gone, say) does not
            w.release()
        return w

    monkeypatch.setattr(video_mod.cv2, "VideoWriter", writer_that_opens_only_once)
    sink = VideoSink(VideoSpec(path=str(tmp_path / "x.mp4")), "video-fail")
    for seq in range(3):
        sink.write(_image(seq), _frame(seq))
    with pytest.raises(SinkError, match="could not open the writer at 160x120"):
        sink.close()
    assert sink.drops() == {"writer_error": 3}


def test_bad_source_fps_and_stats_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="source_fps"):
        VideoSink(VideoSpec(path=str(tmp_path / "x.mp4")), "video-fps", source_fps=-5.0)
    sink = VideoSink(VideoSpec(path=str(tmp_path / "x.mp4")), "video-stats")
    try:
        sink.update_stats({"fps": 30.0})
        assert sink.latest_stats == {"fps": 30.0}
        with pytest.raises(ValueError, match="JSON-able"):
            sink.update_stats({"x": {1, 2}})
    finally:
        sink.close()
