"""Frames through shared memory on a link: the glue between the codec and `shm_ring`.

The sender copies a frame's arrays into its ring (one copy) and sends only topic + header, whose
`shm` object names the slot; the receiver's arrays are read-only views of the slot (no copy),
which stays locked until the last of them is garbage-collected (see `stream.shm_ring`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

import numpy as np

from .codec import DecodeError, PayloadGone
from .shm_ring import (
    RingError,
    RingReader,
    RingWriter,
    SlotGone,
    SlotRef,
    layout,
    remove_stale_rings,
)

GROW_STEP = 64 * 1024  # ring slots are sized to the largest frame seen, in steps of this
SHM_OVERWRITTEN = "shm_overwritten"  # drop reason: the slot was reused before it was read


class ShmSender:
    """A sender's ring, created at the first frame and replaced by a bigger one when a frame
    does not fit. `write` is the codec's `shm_writer`: None (send inline) if every slot is
    still held by a reader, counted through `on_inline`."""

    def __init__(self, label: str, n_slots: int, on_inline: Callable[[], None]):
        self.label = label
        self.n_slots = n_slots
        self.on_inline = on_inline
        self.ring: RingWriter | None = None
        remove_stale_rings()

    def write(self, buffers: list[np.ndarray]) -> dict[str, Any] | None:
        views = [memoryview(b).cast("B") for b in buffers]  # type: ignore[arg-type]  # numpy declares __buffer__ for Python >= 3.12 only
        _, used = layout([v.nbytes for v in views])
        if self.ring is None or used > self.ring.slot_size:
            size = (used + GROW_STEP - 1) // GROW_STEP * GROW_STEP
            old, self.ring = self.ring, RingWriter(self.label, self.n_slots, size)
            if old is not None:
                old.close()
        ref = self.ring.write(views)
        if ref is None:
            self.on_inline()
            return None
        return ref.to_json()

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None


def _int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class ShmReceiver:
    """Resolves `shm` references into slot views; the codec's `shm_reader`."""

    def __init__(self) -> None:
        self.reader = RingReader()

    def read(self, ref: Any, sizes: list[int]) -> list[np.ndarray]:
        """One read-only byte view per part. Raises `PayloadGone` (a drop: overwritten) or
        `DecodeError("shm")` for a reference that is malformed or names no usable ring."""
        if not isinstance(ref, dict):
            raise DecodeError("shm", "'shm' must be an object")
        ring, slot, gen, offsets = (ref.get(k) for k in ("ring", "slot", "gen", "offsets"))
        if (
            not isinstance(ring, str)
            or not _int(slot)
            or not _int(gen)
            or not isinstance(offsets, list)
            or len(offsets) != len(sizes)
            or not all(_int(o) for o in offsets)
        ):
            raise DecodeError("shm", "'shm' needs ring, slot, gen and one offset per part")
        end = 0
        for off, n in zip(offsets, sizes, strict=True):
            if off < end:
                raise DecodeError("shm", "'shm.offsets' must be increasing without overlap")
            end = off + n
        try:
            view = self.reader.lease(SlotRef(ring, slot, gen, offsets), end)
        except RingError as e:
            raise DecodeError("shm", str(e)) from None
        except SlotGone:
            raise PayloadGone(SHM_OVERWRITTEN) from None
        return [view[off : off + n] for off, n in zip(offsets, sizes, strict=True)]

    def close(self) -> None:
        self.reader.close()


__all__ = ["SHM_OVERWRITTEN", "ShmReceiver", "ShmSender"]
