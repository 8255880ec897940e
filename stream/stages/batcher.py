"""Batching frames of several streams for one model call, within a bounded wait.

A batch opens with its first frame and is due when it is full (`max_batch`), when a frame of a
stream already in it arrives (one frame per stream and batch: that frame opens the next
batch, so a fast stream cannot crowd a slow one out), `max_wait_ms` after it opened, or when
waiting longer would make its most urgent frame miss its deadline: the batch runs no later
than the earliest deadline in it less the time a run is expected to take (`reserve_ns`).
The batcher never reads a clock: the stage passes the time, so a test can inject one.
"""

from __future__ import annotations

from ..frame import Frame


class Batcher:
    def __init__(self, max_batch: int, max_wait_ms: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait_ns = int(max_wait_ms * 1e6)
        self.frames: list[Frame] = []
        self.opened_ns = 0
        self.held: Frame | None = None  # a second frame of a stream in the batch: the next one's

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, frame: Frame, now_ns: int) -> None:
        """Take an admitted frame into the open batch (or hold it for the next one)."""
        if self.held is not None:
            raise RuntimeError("take() the due batch before adding more frames")
        if any(f.stream == frame.stream for f in self.frames):
            self.held = frame
            return
        if not self.frames:
            self.opened_ns = now_ns
        self.frames.append(frame)

    def due_ns(self, reserve_ns: int = 0) -> int | None:
        """When the open batch must run at the latest (None: no batch open)."""
        if not self.frames:
            return None
        earliest = min(f.deadline_ns for f in self.frames)
        return min(self.opened_ns + self.max_wait_ns, earliest - reserve_ns)

    def ready(self, now_ns: int, reserve_ns: int = 0) -> bool:
        """Whether the open batch should run now."""
        if not self.frames:
            return False
        if len(self.frames) >= self.max_batch or self.held is not None:
            return True
        due = self.due_ns(reserve_ns)
        return due is not None and now_ns >= due

    def take(self, now_ns: int) -> list[Frame]:
        """The open batch; a held frame opens the next one (at `now_ns`)."""
        batch, self.frames = self.frames, []
        held, self.held = self.held, None
        if held is not None:
            self.add(held, now_ns)
        return batch
