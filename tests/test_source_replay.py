"""The replay source: a recording's frames come back bit-exact, at their recorded intervals
(jitter and gaps included), with their masks and annotations."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import stream.sources.replay as replay_module
from stream.frame import Frame
from stream.recording import RecordingWriter
from stream.sources import SOURCE_TYPES
from stream.sources.base import SourceError
from stream.sources.replay import ReplaySource, ReplaySpec

from .helpers import FakeTime
from .test_recording import sample_frame

INTERVALS_MS = [40, 10, 70, 25, 120, 33, 33, 5, 60]


def write_recording(path: Path, intervals_ms: list[int], rendered: bool = False) -> list[Frame]:
    frames, t = [], 1_700_000_000_000_000_000
    writer = RecordingWriter(path, {"stage": "render", "rendered": rendered}, fsync_s=0)
    for i in range(len(intervals_ms) + 1):
        f = sample_frame(i)
        f.capture_ns = t
        if rendered:
            f.parts["rendered"] = np.full((12, 16, 3), 200 + i, np.uint8)
        writer.write_frame(f, "render", recorded_ns=t + 5_000_000)
        frames.append(f)
        if i < len(intervals_ms):
            t += intervals_ms[i] * 1_000_000
    writer.write_end({"frames": len(frames)}, t)
    writer.close()
    return frames


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The replay source's clock: its pacing sleeps advance it, instantly and exactly."""
    fake = FakeTime()
    monkeypatch.setattr(replay_module, "time", fake)
    return fake


def replay(
    spec: ReplaySpec, n: int, now: Callable[[], float] = time.monotonic
) -> tuple[list, list[float]]:
    """`n` reads of a replay source; the captures and `now()` after each."""
    source = ReplaySource(spec)
    caps, times = [], []
    try:
        for _ in range(n):
            cap = source.read()
            times.append(now())
            caps.append(cap)
    finally:
        source.close()
    return caps, times


def test_frames_bit_exact_at_their_recorded_intervals(tmp_path: Path, fake_time: FakeTime) -> None:
    path = tmp_path / "r.msrec"
    frames = write_recording(path, INTERVALS_MS)
    assert SOURCE_TYPES["replay"][0] is ReplaySpec
    caps, times = replay(ReplaySpec(path=str(path)), len(frames), fake_time.monotonic)
    for f, cap in zip(frames, caps, strict=True):
        assert cap.pixel_format == f.pixel_format and np.array_equal(cap.image, f.image)
        assert np.array_equal(cap.parts["mask"], f.parts["mask"])
        assert np.array_equal(cap.parts["depth"], f.parts["depth"])
        assert cap.annotations == f.annotations  # boxes, labels, model
        assert cap.meta["replay"] == {"stream": "us", "seq": f.seq, "capture_ns": f.capture_ns}
        assert cap.meta["pixel_spacing_mm"] == [0.5, 0.5]
    got_ms = np.diff(times) * 1000
    assert np.abs(got_ms - INTERVALS_MS).max() < 1e-6, got_ms.round(3)  # paced to the recording
    assert abs(sum(got_ms) - sum(INTERVALS_MS)) < 1e-6  # no drift over the run


def test_speed_unpaced_loop_and_no_annotations(tmp_path: Path, fake_time: FakeTime) -> None:
    path = tmp_path / "r.msrec"
    frames = write_recording(path, INTERVALS_MS)
    _, times = replay(ReplaySpec(path=str(path), speed=2.0), len(frames), fake_time.monotonic)
    assert abs((times[-1] - times[0]) * 1000 - sum(INTERVALS_MS) / 2) < 1e-6
    slept = fake_time.slept
    caps, _ = replay(ReplaySpec(path=str(path), speed=None, loop=True, annotations=False), 25)
    assert fake_time.slept == slept  # unpaced: as fast as possible, never a wait
    assert [c.meta["replay"]["seq"] for c in caps[8:13]] == [8, 9, 0, 1, 2]
    assert "mask" not in caps[0].parts and caps[0].annotations.boxes == []
    assert "depth" in caps[0].parts


def test_rendered_images_replay(tmp_path: Path) -> None:
    path = tmp_path / "r.msrec"
    write_recording(path, [10, 10], rendered=True)
    caps, _ = replay(ReplaySpec(path=str(path), image="rendered", speed=None), 3)
    assert caps[2].pixel_format == "bgr8" and int(caps[2].image[0, 0, 0]) == 202
    assert "rendered" not in caps[2].parts
    plain = tmp_path / "plain.msrec"
    write_recording(plain, [10])
    with pytest.raises(SourceError, match="recorded without rendered images"):
        ReplaySource(ReplaySpec(path=str(plain), image="rendered"))


def test_a_cut_recording_replays_its_whole_frames_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "r.msrec"
    write_recording(path, [10, 10, 10])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 700])  # the end record and part of the last frame
    source = ReplaySource(ReplaySpec(path=str(path), speed=None))
    message = " ".join(e.message for e in source.pop_events())
    n = 0
    while source.read() is not None:
        n += 1
    source.close()
    assert n == 3
    assert "bytes of a cut-short record ignored" in message and "no end record" in message


def test_files_that_cannot_replay(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"^replay source: cannot open .*none\.msrec: no such file$"
    ):
        ReplaySource(ReplaySpec(path=str(tmp_path / "none.msrec")))
    junk = tmp_path / "junk.msrec"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(SourceError, match="not a medstream recording"):
        ReplaySource(ReplaySpec(path=str(junk)))
    empty = tmp_path / "empty.msrec"
    RecordingWriter(empty, {}).close()
    with pytest.raises(SourceError, match="holds no whole frame"):
        ReplaySource(ReplaySpec(path=str(empty)))
