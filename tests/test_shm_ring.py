"""Shared-memory frame rings: round trip, overwritten slots detected, dead readers, no torn reads."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from stream import shm_ring
from stream.shm_ring import RingError, RingReader, RingWriter, SlotGone, SlotRef

pytestmark = pytest.mark.skipif(
    not shm_ring.supported(), reason="needs Linux OFD locks and /dev/shm"
)
CTX = mp.get_context("spawn")


def parts(value: int, sizes: tuple[int, ...] = (1000, 37)) -> list[memoryview]:
    return [memoryview(np.full(n, value % 256, np.uint8)) for n in sizes]


def used_bytes(ref: SlotRef, sizes: tuple[int, ...] = (1000, 37)) -> int:
    return ref.offsets[-1] + sizes[-1]


@pytest.fixture
def writer():
    w = RingWriter("test", n_slots=3, slot_size=4096)
    yield w
    w.close()


def test_round_trip_and_views_are_read_only(writer: RingWriter) -> None:
    reader = RingReader()
    ref = writer.write(parts(7))
    assert ref is not None and ref.gen % 2 == 0 and ref.offsets == [0, 1024]
    view = reader.lease(ref, used_bytes(ref))
    assert not view.flags.writeable
    assert (view[:1000] == 7).all() and (view[1024:1061] == 7).all()
    with pytest.raises(ValueError):
        view[0] = 1
    del view
    reader.close()


def test_oversized_frame_does_not_fit(writer: RingWriter) -> None:
    assert writer.write(parts(1, (5000,))) is None


def test_slow_reader_detects_overwritten_slot(writer: RingWriter) -> None:
    reader = RingReader()
    old = writer.write(parts(1))
    for i in range(writer.n_slots):  # the ring wraps: the first slot is written again
        writer.write(parts(2 + i))
    with pytest.raises(SlotGone):
        reader.lease(old, used_bytes(old))
    reader.close()


def test_leased_slot_is_never_overwritten_and_is_released_with_its_views(
    writer: RingWriter,
) -> None:
    reader = RingReader()
    ref = writer.write(parts(9))
    view = reader.lease(ref, used_bytes(ref))
    derived = view[:1000].reshape(10, 100)[2:]  # a view of the view keeps the lease
    del view
    gc.collect()
    for i in range(3 * writer.n_slots):
        r = writer.write(parts(100 + i))
        assert r is not None and r.slot != ref.slot
    assert (derived == 9).all() and reader.held() == 1
    del derived
    gc.collect()
    assert reader.held() == 0
    slots = {writer.write(parts(0)).slot for _ in range(writer.n_slots)}
    assert ref.slot in slots
    reader.close()


def test_all_slots_held_makes_write_return_none(writer: RingWriter) -> None:
    reader = RingReader()
    views = []
    for i in range(writer.n_slots):
        ref = writer.write(parts(i))
        views.append(reader.lease(ref, used_bytes(ref)))
    assert writer.write(parts(50)) is None  # the caller falls back to sending inline
    views.clear()
    assert writer.write(parts(51)) is not None
    reader.close()


def test_bad_references_raise_ring_error(writer: RingWriter) -> None:
    reader = RingReader()
    ref = writer.write(parts(3))
    with pytest.raises(RingError):
        reader.lease(SlotRef("../../etc/passwd", 0, ref.gen, ref.offsets), 10)
    with pytest.raises(RingError):
        reader.lease(SlotRef("medstream-1-x-00000000", 0, 2, [0]), 10)  # no such ring
    with pytest.raises(RingError):
        reader.lease(SlotRef(ref.ring, 99, ref.gen, ref.offsets), 10)
    with pytest.raises(RingError):
        reader.lease(ref, 10**9)
    reader.close()


def test_stale_rings_of_dead_writers_are_removed(tmp_path) -> None:
    dead = tmp_path / "medstream-999999999-x-0123abcd"
    dead.write_bytes(b"\0" * 10)
    mine = tmp_path / f"medstream-{os.getpid()}-x-0123abcd"
    mine.write_bytes(b"\0")
    assert shm_ring.remove_stale_rings(str(tmp_path)) == 1
    assert not dead.exists() and mine.exists()


def _hold_all(name_refs: list, ready, used: int) -> None:
    reader = RingReader()
    views = [reader.lease(SlotRef(*r), used) for r in name_refs]
    ready.put(len(views))
    time.sleep(60)


@pytest.mark.slow
def test_dead_reader_does_not_block_the_writer(writer: RingWriter) -> None:
    refs = [writer.write(parts(i)) for i in range(writer.n_slots)]
    ready = CTX.Queue()
    p = CTX.Process(
        target=_hold_all,
        args=([(r.ring, r.slot, r.gen, r.offsets) for r in refs], ready, used_bytes(refs[0])),
    )
    p.start()
    try:
        assert ready.get(timeout=30) == writer.n_slots
        assert writer.write(parts(9)) is None  # every slot pinned by the live reader
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert writer.write(parts(10)) is not None  # the kernel dropped the dead reader's locks
    finally:
        if p.is_alive():
            p.kill()


def _write_forever(refs, stop, size: int) -> None:
    w = RingWriter("torn", n_slots=2, slot_size=size)
    value = 0
    try:
        while not stop.is_set():
            value += 1
            ref = w.write([memoryview(np.full(size, value % 251, np.uint8))])
            if ref is not None:
                try:
                    refs.put_nowait((ref.ring, ref.slot, ref.gen, ref.offsets, value % 251))
                except Exception:
                    pass
    finally:
        w.close()


@pytest.mark.slow
def test_concurrent_writer_and_reader_never_see_torn_data() -> None:
    """A writer hammering a 2-slot ring with 1 MiB frames; the reader checks every byte of
    every frame it leases (twice, with a pause between) and must never see a mixed frame."""
    size = 1 << 20
    refs, stop = CTX.Queue(maxsize=64), CTX.Event()
    p = CTX.Process(target=_write_forever, args=(refs, stop, size))
    p.start()
    reader = RingReader()
    ok = gone = 0
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            ring, slot, gen, offsets, value = refs.get(timeout=30)
            try:
                view = reader.lease(SlotRef(ring, slot, gen, offsets), size)
            except SlotGone:
                gone += 1
                continue
            first = np.unique(view)
            time.sleep(0.001)  # the writer keeps going meanwhile; this slot must not change
            second = np.unique(view)
            assert first.tolist() == [value] and second.tolist() == [value]
            ok += 1
            del view
    finally:
        stop.set()
        p.join(10)
        if p.is_alive():
            p.kill()
        reader.close()
    assert ok >= 20, (ok, gone)
    assert gone > 0, "the reader was never too slow: the test did not exercise overwrites"
