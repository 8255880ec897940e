"""The .msrec recording format: bit-exact round trip, a file cut at any byte reads back to its
last whole record, a damaged record fails its checksum, a foreign file is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream.frame import Annotations, Box, Frame, Span
from stream.recording import RecordingError, RecordingReader, RecordingWriter


def sample_frame(seq: int, shape: tuple[int, int] = (12, 16)) -> Frame:
    rng = np.random.default_rng(seq)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, shape, dtype=np.uint8)
    depth = rng.random(shape, dtype=np.float32)
    return Frame(
        stream="us",
        seq=seq,
        capture_ns=1_000_000_000 + seq * 33_000_000,
        deadline_ns=2_000_000_000 + seq,
        image=image,
        pixel_format="bgr8",
        epoch=7,
        parts={"mask": mask, "depth": depth},
        annotations=Annotations(
            "us-seg", ["bg", "lesion"], [Box(1, 2, 5, 6, 1, 0.9)], "onnxruntime"
        ),
        trace=[Span("grab", 1, 2), Span("infer", 3, 4)],
        meta={"pixel_spacing_mm": [0.5, 0.5], "note": "é"},
    )


def record(path: Path, n: int, end: bool = True) -> list[Frame]:
    frames = [sample_frame(i) for i in range(n)]
    writer = RecordingWriter(path, {"stage": "render"}, fsync_s=0)
    for i, f in enumerate(frames):
        writer.write_frame(f, "render", recorded_ns=5_000 + i)
    if end:
        writer.write_end({"frames": n}, recorded_ns=9_999)
    writer.close()
    return frames


def assert_same(a: Frame, b: Frame) -> None:
    assert (a.stream, a.seq, a.capture_ns, a.deadline_ns, a.epoch) == (
        b.stream,
        b.seq,
        b.capture_ns,
        b.deadline_ns,
        b.epoch,
    )
    assert a.pixel_format == b.pixel_format
    assert a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image)
    assert set(a.parts) == set(b.parts)
    for name in a.parts:
        assert a.parts[name].dtype == b.parts[name].dtype
        assert np.array_equal(a.parts[name], b.parts[name])
    assert a.annotations == b.annotations and a.trace == b.trace and a.meta == b.meta


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    path = tmp_path / "r.msrec"
    frames = record(path, 5)
    with RecordingReader(path) as reader:
        assert (
            reader.header["format"] == "medstream-recording" and reader.header["stage"] == "render"
        )
        assert len(reader) == 5 and reader.truncated_bytes == 0
        assert reader.end == {"frames": 5}
        assert [e.recorded_ns for e in reader.frames] == [5000, 5001, 5002, 5003, 5004]
        for want, got in zip(frames, reader, strict=True):
            assert_same(want, got)


@pytest.mark.slow  # long: reads back a recording cut at every byte
def test_cut_at_any_byte_reads_back_to_the_last_whole_frame(tmp_path: Path) -> None:
    path = tmp_path / "full.msrec"
    frames = record(path, 3, end=False)
    data = path.read_bytes()
    with RecordingReader(path) as reader:
        starts = [e.offset for e in reader.frames] + [len(data)]
    cut = tmp_path / "cut.msrec"
    for size in range(starts[1] - 40, len(data) + 1):  # through the last two records
        cut.write_bytes(data[:size])
        with RecordingReader(cut) as reader:
            whole = sum(1 for end in starts[1:] if end <= size)
            assert len(reader) == whole, size
            assert reader.truncated_bytes == size - starts[whole], size
            assert reader.end is None
            if whole:
                assert_same(frames[whole - 1], reader.read_frame(whole - 1))


def test_damaged_record_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "r.msrec"
    record(path, 3)
    data = bytearray(path.read_bytes())
    with RecordingReader(path) as reader:
        offset = reader.frames[1].offset
    data[offset + 200] ^= 0xFF  # flip bits inside frame 1's image bytes
    path.write_bytes(bytes(data))
    with RecordingReader(path) as reader:
        assert len(reader) == 3  # the index does not read bodies
        reader.read_frame(0)
        with pytest.raises(RecordingError, match="record at byte .* fails its checksum"):
            reader.read_frame(1)
        reader.read_frame(2)


@pytest.mark.parametrize(
    "damage",
    [
        lambda h: b"XXXX" + h[4:],  # the mark
        lambda h: h[:8] + (10**12).to_bytes(8, "little") + h[16:],  # body_len past the end
        lambda h: h[:6] + (0).to_bytes(2, "little") + h[8:],  # nparts 0
    ],
)
def test_a_damaged_record_header_costs_that_record_not_the_rest(damage, tmp_path: Path) -> None:
    """The scan stopped at a damaged header: the records behind it were reported as 'bytes of
    a cut-short record ignored' (120 of 220 frames of a real recording)."""
    path = tmp_path / "r.msrec"
    frames = record(path, 6)
    data = bytearray(path.read_bytes())
    with RecordingReader(path) as reader:
        starts = [e.offset for e in reader.frames]
    head = bytes(data[starts[2] : starts[2] + 28])
    data[starts[2] : starts[2] + 28] = damage(head)
    path.write_bytes(bytes(data))
    with RecordingReader(path) as reader:
        assert reader.damaged == [(starts[2], starts[3] - starts[2])]
        assert reader.truncated_bytes == 0 and reader.end == {"frames": 6}
        for want, got in zip([f for i, f in enumerate(frames) if i != 2], reader, strict=True):
            assert_same(want, got)


def test_a_mark_inside_a_body_is_not_taken_for_a_record(tmp_path: Path) -> None:
    """After a damaged header the search skips `MSR1` bytes that are not a record whose
    checksum holds, such as a copy of a header written into an image."""
    path = tmp_path / "r.msrec"
    record(path, 4)
    data = bytearray(path.read_bytes())
    with RecordingReader(path) as reader:
        starts = [e.offset for e in reader.frames]
    fake = bytes(data[starts[3] : starts[3] + 28])  # frame 3's header, checksum and all
    data[starts[1] + 100 : starts[1] + 128] = fake  # into frame 1's body
    data[starts[1] : starts[1] + 4] = b"XXXX"  # and frame 1's header damaged
    path.write_bytes(bytes(data))
    with RecordingReader(path) as reader:
        assert [e.offset for e in reader.frames] == [starts[0], starts[2], starts[3]]
        assert reader.damaged == [(starts[1], starts[2] - starts[1])]


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.msrec"
    bad.write_bytes(b"GIF89a" + b"\x00" * 100)
    with pytest.raises(RecordingError, match="not a medstream recording"):
        RecordingReader(bad)
    with pytest.raises(RecordingError, match="cannot open"):
        RecordingReader(tmp_path / "none.msrec")
    short = tmp_path / "short.msrec"
    record(short, 1)
    short.write_bytes(short.read_bytes()[:20])  # cut inside the file header
    with pytest.raises(RecordingError, match="file header is not JSON"):
        RecordingReader(short)
