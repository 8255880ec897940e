"""The recorder sink: lossless round trip of the original frames, never blocking the render loop
(overflow counted), and a recorder killed with SIGKILL leaves a file readable to its last whole
frame (a real child process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stream.recording import RecordingReader
from stream.sinks import SINK_TYPES, SinkError, open_sink
from stream.sinks.recorder import RecorderSink, RecorderSpec

from .test_recording import assert_same, sample_frame

ROOT = Path(__file__).resolve().parent.parent


def test_recorder_round_trip_with_rendered_images(tmp_path: Path) -> None:
    assert SINK_TYPES["recorder"][0] is RecorderSpec
    path = tmp_path / "rec" / "{stage}.msrec"
    sink = open_sink({"type": "recorder", "path": str(path), "rendered": True}, "s", "render")
    frames = [sample_frame(i) for i in range(6)]
    rendered = [np.full((12, 16, 3), i, np.uint8) for i in range(6)]
    for f, r in zip(frames, rendered, strict=True):
        sink.write(r, f)
    sink.update_stats({"fps": 30.0})
    sink.close()
    assert sink.drops() == {}
    with RecordingReader(tmp_path / "rec" / "render.msrec") as reader:
        assert reader.header["rendered"] is True and reader.header["stage"] == "render"
        assert reader.end["frames"] == 6 and reader.end["stats"] == {"fps": 30.0}
        for i, got in enumerate(reader):
            assert np.array_equal(got.parts.pop("rendered"), rendered[i])
            assert_same(frames[i], got)
    assert set(frames[0].parts) == {"mask", "depth"}  # the sink did not touch the frame


def test_existing_file_needs_overwrite_and_start_expands(tmp_path: Path) -> None:
    path = tmp_path / "r.msrec"
    path.write_bytes(b"keep me")
    with pytest.raises(
        SinkError, match=r"^recorder sink 'render': cannot write .*r\.msrec: the file exists"
    ):
        RecorderSink(RecorderSpec(path=str(path)), "render")
    assert path.read_bytes() == b"keep me"
    sink = RecorderSink(RecorderSpec(path=str(tmp_path / "{stage}-{start}.msrec")), "render")
    sink.close()
    assert sink.path.name.startswith("render-2") and sink.path.exists()


def _slow(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """A disk that takes `seconds` for each frame (slower than the writes that queue them)."""
    original = RecorderSink._record

    def slow_record(self, *args):
        time.sleep(seconds)
        original(self, *args)

    monkeypatch.setattr(RecorderSink, "_record", slow_record)


def test_slow_disk_never_blocks_write_and_overflow_is_counted(tmp_path, monkeypatch) -> None:
    entered, release = threading.Event(), threading.Event()
    original = RecorderSink._record

    def stuck_record(self, *args):  # a disk that hangs on the first frame until released
        entered.set()
        release.wait(10)
        original(self, *args)

    monkeypatch.setattr(RecorderSink, "_record", stuck_record)
    sink = RecorderSink(RecorderSpec(path=str(tmp_path / "r.msrec"), queue=3), "render")
    image = np.zeros((12, 16, 3), np.uint8)
    sink.write(image, sample_frame(0))
    assert entered.wait(5)  # the writer holds frame 0 and is stuck
    worst = 0.0
    for i in range(1, 30):
        t0 = time.perf_counter()
        sink.write(image, sample_frame(i))
        worst = max(worst, time.perf_counter() - t0)
    release.set()
    sink.close()
    drops = sink.drops()
    # a write that waited on the disk would wait for the release (10 s); 0.1 s is a sanity
    # bound for a loaded machine, not a speed target
    assert worst < 0.1, worst
    assert drops == {"sink_overflow": 30 - 1 - 3}  # frame 0 at the disk, 3 in the queue
    assert sink.frames_queued + drops["sink_overflow"] == 30
    with RecordingReader(sink.path) as reader:
        assert len(reader) == sink.frames_written == sink.frames_queued
        assert reader.end["drops"] == drops


def test_wait_mode_keeps_every_frame(tmp_path, monkeypatch) -> None:
    _slow(monkeypatch, 0.01)
    sink = RecorderSink(RecorderSpec(path=str(tmp_path / "r.msrec"), queue=2, wait=True), "rec")
    for i in range(15):
        sink.write(np.zeros((12, 16, 3), np.uint8), sample_frame(i))
    sink.close()
    assert sink.drops() == {}
    with RecordingReader(sink.path) as reader:
        assert [f.seq for f in reader] == list(range(15))


CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from stream.frame import Frame
    from stream.sinks.recorder import RecorderSink, RecorderSpec
    sink = RecorderSink(RecorderSpec(path=sys.argv[1], queue=4, wait=True, fsync_s=3600), "rec")
    shape = (int(sys.argv[2]), int(sys.argv[3]), 3)
    seq = 0
    while True:
        image = np.random.default_rng(seq).integers(0, 256, shape, dtype=np.uint8)
        sink.write(image, Frame("cam", seq, seq, seq, image, "bgr8"))
        print(sink.frames_written, flush=True)
        seq += 1
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(720, 1280), (8, 8)], ids=["720p", "tiny"])
def test_recorder_killed_with_sigkill_reads_back_to_its_last_whole_frame(tmp_path, shape) -> None:
    """Large frames: the kill likely lands mid-record; tiny ones: many records per OS write
    unless each is flushed."""
    path = tmp_path / "killed.msrec"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), *map(str, shape)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    written = 0
    try:
        deadline = time.monotonic() + 60
        while written < 12 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the recording process died"
            written = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: the writer thread is busy with a frame
        proc.wait(10)
        proc.stdout.close()
    assert written >= 12
    with RecordingReader(path) as reader:
        assert reader.end is None  # it never closed
        assert len(reader) >= written  # everything it had written survived
        for i in range(len(reader)):  # and every whole record reads back bit-exact
            frame = reader.read_frame(i)
            want = np.random.default_rng(i).integers(0, 256, (*shape, 3), dtype=np.uint8)
            assert frame.seq == i and np.array_equal(frame.image, want)
        size = path.stat().st_size
        assert reader.truncated_bytes == size - (
            reader.frames[-1].offset + 28 + reader.frames[-1].body_len
        )
