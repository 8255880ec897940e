"""A ring of frame slots in shared memory, for links between stages on one host.

One writer (the producing stage) owns a ring file under /dev/shm; any number of readers map it
read-only. Each slot is guarded by an open-file-description (OFD) byte-range lock on its bytes:

- the writer takes the slot's lock exclusively, without waiting (`F_OFD_SETLK`), bumps the
  slot's generation to an odd value, copies the frame in, sets the generation to the next even
  value and unlocks. A slot whose lock it cannot get is in use by a reader and is skipped;
- a reader takes the slot's lock shared, without waiting, and checks the generation named in the
  frame's reference: if the lock is refused (the writer is writing it right now) or the
  generation moved on, the frame was overwritten and is counted as a drop. Otherwise the slot
  cannot change while the reader holds the lock, so a torn read is impossible.

The kernel drops the locks of a process that dies, so a dead reader never blocks the writer, and
a slow reader only pins the slots it still uses: the writer reuses the others.

Lifetime contract (reader side): `RingReader.lease` returns a read-only uint8 array that is a
view into the slot. The slot stays locked as long as that array, or any numpy array derived
from it (slices, reshapes, `.view(dtype)`, buffers handed to ZeroMQ), is alive; the lock is
released when the last of them is garbage-collected. Code that keeps pixels longer than it keeps
the frame must copy them (`np.array(view)`), as with any received buffer.

The memory order this relies on comes from the lock system calls (each is a full barrier), so
the scheme holds on weakly ordered CPUs too. Linux only (OFD locks, /dev/shm).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import secrets
import struct
import threading
import time
import weakref
from contextlib import suppress
from dataclasses import dataclass

import numpy as np

RING_DIR = "/dev/shm"
PREFIX = "medstream-"
MAGIC = b"MSRING1\0"
VERSION = 1
PAGE = 4096
FILE_HEADER = PAGE  # bytes before slot 0
SLOT_HEADER = 64  # per slot: generation and bytes used; data follows
ALIGN = 64  # parts start on 64-byte boundaries inside a slot
MAX_SLOTS = 64
MAX_RINGS_MAPPED = 16  # a reader keeps at most this many rings mapped (idle ones are closed)

_FILE = struct.Struct("<8sIIQQQQ")  # magic, version, n_slots, slot_size, stride, pid, created_ns
_SLOT = struct.Struct("<QQ")  # generation, bytes used
_NAME = re.compile(r"^medstream-([0-9]+)-[A-Za-z0-9_.-]{1,80}-[0-9a-f]{8}$")
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # fault the pages in at map time, not per frame


def supported() -> bool:
    """True where rings work: Linux with OFD locks and a writable /dev/shm."""
    return _F_OFD_SETLK is not None and os.access(RING_DIR, os.W_OK)


class RingError(ValueError):
    """A ring that cannot be created, opened or trusted; the message says which and why."""


def _lock(fd: int, kind: int, start: int, length: int) -> bool:
    """Take (F_RDLCK / F_WRLCK) or drop (F_UNLCK) an OFD lock without waiting."""
    assert _F_OFD_SETLK is not None
    flock = struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, flock)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def layout(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of parts of `sizes` bytes inside a slot (64-byte aligned) and the bytes used."""
    offsets, used = [], 0
    for n in sizes:
        offsets.append(used)
        used = _round_up(used + n, ALIGN)
    return offsets, used


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_rings(ring_dir: str = RING_DIR) -> int:
    """Unlink ring files whose writer process is gone (it was killed before it cleaned up)."""
    removed = 0
    try:
        names = os.listdir(ring_dir)
    except OSError:
        return 0
    for name in names:
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            with suppress(OSError):
                os.unlink(os.path.join(ring_dir, name))
                removed += 1
    return removed


@dataclass(frozen=True)
class SlotRef:
    """Where one frame's payload lies: ring file name, slot index, generation, part offsets."""

    ring: str
    slot: int
    gen: int
    offsets: list[int]

    def to_json(self) -> dict:
        return {"ring": self.ring, "slot": self.slot, "gen": self.gen, "offsets": self.offsets}


class RingWriter:
    """The producing side: `write(buffers)` copies a frame's parts into a free slot."""

    def __init__(self, label: str, n_slots: int, slot_size: int, ring_dir: str = RING_DIR):
        if not supported():
            raise RingError("shared-memory rings need Linux OFD locks and a writable /dev/shm")
        if not 2 <= n_slots <= MAX_SLOTS:
            raise RingError(f"n_slots must be in [2, {MAX_SLOTS}], got {n_slots}")
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:80] or "ring"
        self.name = f"{PREFIX}{os.getpid()}-{label}-{secrets.token_hex(4)}"
        self.path = os.path.join(ring_dir, self.name)
        self.n_slots = n_slots
        self.slot_size = _round_up(max(slot_size, 1), ALIGN)
        self.stride = _round_up(SLOT_HEADER + self.slot_size, PAGE)
        size = FILE_HEADER + n_slots * self.stride
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(self.fd, size)
            self.mm = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED | _POPULATE)
        except OSError:
            os.close(self.fd)
            os.unlink(self.path)
            raise
        self.view = memoryview(self.mm)
        header = (MAGIC, VERSION, n_slots, self.slot_size, self.stride, os.getpid(), time.time_ns())
        _FILE.pack_into(self.mm, 0, *header)
        self.next = 0

    def slot_start(self, slot: int) -> int:
        return FILE_HEADER + slot * self.stride

    def write(self, buffers: list[memoryview]) -> SlotRef | None:
        """Copy `buffers` (C-contiguous, byte-cast) into the next free slot and return its
        reference; None if they do not fit or every slot is held by a reader right now."""
        offsets, used = layout([b.nbytes for b in buffers])
        if used > self.slot_size:
            return None
        for k in range(self.n_slots):
            slot = (self.next + k) % self.n_slots
            start = self.slot_start(slot)
            if not _lock(self.fd, fcntl.F_WRLCK, start, self.stride):
                continue  # a reader still holds it
            try:
                gen, _ = _SLOT.unpack_from(self.mm, start)
                _SLOT.pack_into(self.mm, start, gen + 1, 0)  # odd: being written
                data = start + SLOT_HEADER
                for off, buf in zip(offsets, buffers, strict=True):
                    self.view[data + off : data + off + buf.nbytes] = buf
                gen += 2
                _SLOT.pack_into(self.mm, start, gen, used)
            finally:
                _lock(self.fd, fcntl.F_UNLCK, start, self.stride)
            self.next = slot + 1
            return SlotRef(self.name, slot, gen, offsets)
        return None

    def close(self) -> None:
        """Unlink the ring; readers that mapped it keep their mapping until they let go."""
        if self.fd < 0:
            return
        self.view.release()
        with suppress(BufferError):
            self.mm.close()
        os.close(self.fd)
        self.fd = -1
        with suppress(FileNotFoundError):
            os.unlink(self.path)


class _MappedRing:
    """A reader's mapping of one ring, with its own lock file description."""

    def __init__(self, name: str, ring_dir: str):
        if not _NAME.match(name):
            raise RingError(f"not a ring name: {name!r:.100}")
        path = os.path.join(ring_dir, name)
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise RingError(f"cannot open ring {name}: {e.strerror}") from None
        try:
            size = os.fstat(self.fd).st_size
            if size < FILE_HEADER:
                raise RingError(f"ring {name}: {size} bytes is too small")
            self.mm = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
            magic, version, n, slot_size, stride, _pid, _t = _FILE.unpack_from(self.mm, 0)
            if magic != MAGIC or version != VERSION:
                raise RingError(f"ring {name}: not a version-{VERSION} ring")
            if not (
                1 <= n <= MAX_SLOTS
                and stride >= SLOT_HEADER + slot_size
                and FILE_HEADER + n * stride <= size
            ):
                raise RingError(f"ring {name}: inconsistent header")
        except (RingError, OSError, ValueError):
            os.close(self.fd)
            raise
        self.name = name
        self.n_slots, self.slot_size, self.stride = n, slot_size, stride
        self.holds: dict[int, int] = {}  # slot -> live leases in this process

    def close(self) -> None:
        # arrays still alive somewhere: the mapping goes with the last one
        with suppress(BufferError):
            self.mm.close()
        os.close(self.fd)


class SlotGone(Exception):
    """The slot a frame referred to was overwritten before it could be read (a counted drop)."""


class RingReader:
    """The consuming side: maps rings named in frame references and leases their slots."""

    def __init__(self, ring_dir: str = RING_DIR):
        self.ring_dir = ring_dir
        self.rings: dict[str, _MappedRing] = {}
        self._lock = threading.RLock()

    def _ring(self, name: str) -> _MappedRing:
        ring = self.rings.get(name)
        if ring is None:
            if len(self.rings) >= MAX_RINGS_MAPPED:
                for old_name, old in list(self.rings.items()):
                    if not any(old.holds.values()):
                        old.close()
                        del self.rings[old_name]
            ring = self.rings[name] = _MappedRing(name, self.ring_dir)
        return ring

    def lease(self, ref: SlotRef, used: int) -> np.ndarray:
        """A read-only view of the first `used` bytes of the referenced slot, locked for as long
        as the view (or anything derived from it) lives. Raises `SlotGone` if the slot was
        overwritten, `RingError` if the reference does not fit the ring."""
        with self._lock:
            ring = self._ring(ref.ring)
            if not 0 <= ref.slot < ring.n_slots:
                raise RingError(f"slot {ref.slot} outside ring {ref.ring} of {ring.n_slots}")
            if not 0 <= used <= ring.slot_size:
                raise RingError(f"{used} bytes do not fit a slot of {ring.slot_size}")
            start = FILE_HEADER + ref.slot * ring.stride
            held = ring.holds.get(ref.slot, 0)
            if held == 0 and not _lock(ring.fd, fcntl.F_RDLCK, start, ring.stride):
                raise SlotGone("being overwritten")
            gen, written = _SLOT.unpack_from(ring.mm, start)
            if gen != ref.gen or used > written:
                if held == 0:
                    _lock(ring.fd, fcntl.F_UNLCK, start, ring.stride)
                if gen != ref.gen:
                    raise SlotGone("overwritten")
                raise RingError(f"reference needs {used} bytes, slot holds {written}")
            ring.holds[ref.slot] = held + 1
        # a fresh array over a fresh buffer export: numpy views derived from it keep it (not the
        # mapping) as their base, so the lease lives exactly as long as any of them
        view = np.frombuffer(ring.mm, np.uint8, count=used, offset=start + SLOT_HEADER)
        weakref.finalize(view, self._release, ring, ref.slot, start)
        return view

    def _release(self, ring: _MappedRing, slot: int, start: int) -> None:
        with self._lock:
            n = ring.holds.get(slot, 0) - 1
            if n > 0:
                ring.holds[slot] = n
                return
            ring.holds.pop(slot, None)
            with suppress(OSError):  # already closed: the locks went with the descriptor
                _lock(ring.fd, fcntl.F_UNLCK, start, ring.stride)

    def held(self) -> int:
        """Slots this process holds right now (for tests and stats)."""
        with self._lock:
            return sum(sum(r.holds.values()) for r in self.rings.values())

    def close(self) -> None:
        """Unmap every ring. Leases still alive keep their memory; their locks are dropped."""
        with self._lock:
            for ring in self.rings.values():
                ring.close()
            self.rings.clear()
