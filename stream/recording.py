"""Recording files (`.msrec`): an append-only sequence of checksummed, length-prefixed records,
each frame record holding the frame's wire-protocol v1 message itself. See docs/recording.md.

    file    = file_header record*
    file_header = MAGIC (8 bytes) | u32 version | u32 n | n bytes of UTF-8 JSON
    record  = RECORD_MARK (4) | u8 kind | u8 0 | u16 nparts | u64 body_len | u64 recorded_ns
              | u32 crc32 | body
    body    = nparts x u64 part_len | the parts' bytes, concatenated

All integers little-endian; crc32 (zlib) covers kind..recorded_ns and the body. There is no
index: a reader scans the record headers (seeking over the bodies), so a file cut short at any
byte - a recorder killed mid-write - reads back up to its last whole record.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedReader
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any, BinaryIO

from .codec import DecodeError, decode, encode_frame
from .frame import Frame

MAGIC = b"MSTREC\r\n"
FORMAT_VERSION = 1
RECORD_MARK = b"MSR1"
KIND_FRAME = 1  # parts: one wire-protocol v1 frame message (topic, header, arrays)
KIND_END = 2  # parts: one JSON object written by a recorder that closed normally
KINDS = (KIND_FRAME, KIND_END)
_FILE_HEAD = struct.Struct("<8sII")
_RECORD_HEAD = struct.Struct("<4sBBHQQI")  # mark, kind, pad, nparts, body_len, recorded_ns, crc
MAX_PARTS = 16
MAX_HEADER_JSON = 1 << 20
RESYNC_CHUNK = 1 << 20  # bytes searched at a time for the record after a damaged one


class RecordingError(ValueError):
    """A file that is not a readable recording, or a record that fails its checksum."""


def _crc(kind: int, nparts: int, body_len: int, recorded_ns: int, body: list[Any]) -> int:
    crc = zlib.crc32(struct.pack("<BHQQ", kind, nparts, body_len, recorded_ns))
    for chunk in body:
        crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


def _as_bytes_like(part: Any) -> bytes | memoryview:
    """A flat byte buffer (numpy arrays as their raw bytes, no copy); len() is its size."""
    return part if isinstance(part, bytes) else memoryview(part).cast("B")


class RecordingWriter:
    """Appends records to a new file. Each record is handed to the OS as soon as it is written
    (so a killed process loses at most the record being written); `fsync_s` bounds what a
    power cut can lose (0: fsync after every record)."""

    def __init__(self, path: str | Path, header: dict[str, Any], fsync_s: float = 1.0) -> None:
        self.path = Path(path)
        self.fsync_s = fsync_s
        self.records = 0
        self.bytes = 0
        self._last_sync = time.monotonic()
        self._file: BinaryIO = open(self.path, "wb")
        head = {"format": "medstream-recording", "version": FORMAT_VERSION, **header}
        text = json.dumps(head, separators=(",", ":"), allow_nan=False).encode()
        self._write([_FILE_HEAD.pack(MAGIC, FORMAT_VERSION, len(text)), text])

    def _write(self, chunks: list[Any]) -> None:
        for chunk in chunks:
            self._file.write(chunk)
            self.bytes += len(chunk)
        self._file.flush()
        now = time.monotonic()
        if self.fsync_s == 0 or now - self._last_sync >= self.fsync_s:
            os.fsync(self._file.fileno())
            self._last_sync = now

    def write_parts(self, kind: int, parts: list[Any], recorded_ns: int) -> None:
        """Append one record of `parts` (bytes or buffers)."""
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind}")
        if not 0 < len(parts) <= MAX_PARTS:
            raise ValueError(f"a record holds 1..{MAX_PARTS} parts, got {len(parts)}")
        buffers = [_as_bytes_like(p) for p in parts]
        lengths = struct.pack(f"<{len(buffers)}Q", *(len(b) for b in buffers))
        body = [lengths, *buffers]
        body_len = sum(len(c) for c in body)
        crc = _crc(kind, len(buffers), body_len, recorded_ns, body)
        head = _RECORD_HEAD.pack(RECORD_MARK, kind, 0, len(buffers), body_len, recorded_ns, crc)
        self._write([head, *body])
        self.records += 1

    def write_frame(self, frame: Frame, sender: str, recorded_ns: int) -> None:
        """Append `frame` as its wire-protocol message (link_seq = frame records so far + 1)."""
        parts = encode_frame(frame, sender, self.records + 1, recorded_ns)
        self.write_parts(KIND_FRAME, parts, recorded_ns)

    def write_end(self, info: dict[str, Any], recorded_ns: int) -> None:
        """Append the end record: the recording closed normally."""
        text = json.dumps(info, separators=(",", ":"), allow_nan=False).encode()
        self.write_parts(KIND_END, [text], recorded_ns)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()


@dataclass(frozen=True)
class RecordEntry:
    """Where one record lies in the file."""

    offset: int  # of the record header
    kind: int
    nparts: int
    body_len: int
    recorded_ns: int
    crc: int


class RecordingReader:
    """Scans a recording's record headers on open (the index); reads records on demand.

    `frames` lists the frame records; `end` is the end record's JSON (None if the recorder did
    not close normally); `truncated_bytes` counts bytes after the last whole record (a recorder
    killed mid-write leaves some); `damaged` lists the stretches (offset, bytes) skipped from a
    damaged record header to the next whole record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: BufferedReader = open(self.path, "rb")
        except OSError as e:
            raise RecordingError(f"{self.path}: cannot open: {e.strerror or e}") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.header = self._read_header()
            self.damaged: list[tuple[int, int]] = []  # (offset, bytes) skipped to a next record
            self.entries, self.truncated_bytes = self._scan()
        except BaseException:
            self._file.close()
            raise
        self.frames = [e for e in self.entries if e.kind == KIND_FRAME]
        ends = [e for e in self.entries if e.kind == KIND_END]
        self.end: dict[str, Any] | None = (
            json.loads(bytes(self.read_parts(ends[-1])[0])) if ends else None
        )

    def _read_header(self) -> dict[str, Any]:
        raw = self._file.read(_FILE_HEAD.size)
        if len(raw) < _FILE_HEAD.size or raw[:8] != MAGIC:
            raise RecordingError(f"{self.path}: not a medstream recording (bad magic)")
        _, version, n = _FILE_HEAD.unpack(raw)
        if version != FORMAT_VERSION:
            raise RecordingError(
                f"{self.path}: recording format {version}, expected {FORMAT_VERSION}"
            )
        if n > MAX_HEADER_JSON:
            raise RecordingError(f"{self.path}: file header of {n} bytes is too large")
        text = self._file.read(n)
        try:
            header = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise RecordingError(
                f"{self.path}: file header is not JSON (damaged or cut short)"
            ) from None
        if not isinstance(header, dict):
            raise RecordingError(f"{self.path}: file header is not a JSON object")
        return header

    def _scan(self) -> tuple[list[RecordEntry], int]:
        """The index. Garbage where a record should start (a damaged header) is skipped to the
        next record whose header and checksum hold (`damaged`: offset and length of each
        stretch); what follows the last whole record with none behind it is returned as the
        truncated bytes."""
        entries = []
        offset = self._file.tell()
        while offset + _RECORD_HEAD.size <= self.size:
            entry = self._entry_at(offset)
            if entry is None:
                found = self._next_record(offset + 1)
                if found is None:
                    break
                self.damaged.append((offset, found - offset))
                offset = found
                continue
            entries.append(entry)
            offset += _RECORD_HEAD.size + entry.body_len
        return entries, self.size - offset

    def _entry_at(self, offset: int) -> RecordEntry | None:
        """The record whose header starts at `offset`, if it is sound and its body lies inside
        the file."""
        self._file.seek(offset)
        head = self._file.read(_RECORD_HEAD.size)
        if len(head) < _RECORD_HEAD.size:
            return None
        mark, kind, _, nparts, body_len, recorded_ns, crc = _RECORD_HEAD.unpack(head)
        if mark != RECORD_MARK or kind not in KINDS or not 0 < nparts <= MAX_PARTS:
            return None
        if offset + _RECORD_HEAD.size + body_len > self.size or body_len < 8 * nparts:
            return None
        return RecordEntry(offset, kind, nparts, body_len, recorded_ns, crc)

    def _next_record(self, start: int) -> int | None:
        """The offset of the first record at or after `start` whose header is sound and whose
        checksum holds (the mark inside a body is not taken for a record); None if none."""
        pos = start
        while pos + _RECORD_HEAD.size <= self.size:
            self._file.seek(pos)
            chunk = self._file.read(RESYNC_CHUNK)
            at = chunk.find(RECORD_MARK)
            while at != -1:
                entry = self._entry_at(pos + at)
                if entry is not None and self._checks_out(entry):
                    return entry.offset
                at = chunk.find(RECORD_MARK, at + 1)
            pos += len(chunk) - len(RECORD_MARK) + 1
        return None

    def _checks_out(self, entry: RecordEntry) -> bool:
        try:
            self.read_parts(entry)
        except RecordingError:
            return False
        return True

    def read_parts(self, entry: RecordEntry) -> list[memoryview]:
        """The record's parts (views of one fresh buffer), after checking its checksum."""
        self._file.seek(entry.offset + _RECORD_HEAD.size)
        body = bytearray(entry.body_len)
        if self._file.readinto(body) != entry.body_len:
            raise RecordingError(f"{self.path}: record at byte {entry.offset} is cut short")
        crc = _crc(entry.kind, entry.nparts, entry.body_len, entry.recorded_ns, [body])
        if crc != entry.crc:
            raise RecordingError(f"{self.path}: record at byte {entry.offset} fails its checksum")
        lengths = struct.unpack_from(f"<{entry.nparts}Q", body)
        bounds = list(accumulate(lengths, initial=8 * entry.nparts))  # each part's start, then end
        if bounds[-1] != entry.body_len:
            raise RecordingError(f"{self.path}: record at byte {entry.offset} has bad part lengths")
        view = memoryview(body)
        return [view[start:end] for start, end in pairwise(bounds)]

    def read_frame(self, index: int) -> Frame:
        """Frame record `index` decoded (arrays are read-only views of a fresh buffer)."""
        entry = self.frames[index]
        try:
            msg = decode(self.read_parts(entry))
        except DecodeError as e:
            raise RecordingError(
                f"{self.path}: frame record {index} is not a valid frame message: {e}"
            ) from None
        if msg.frame is None:
            raise RecordingError(f"{self.path}: frame record {index} holds no frame")
        return msg.frame

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return (self.read_frame(i) for i in range(len(self.frames)))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
