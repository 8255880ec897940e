"""WriterThread: the bounded queue and writer thread behind the file sinks (video, recorder).

The render stage queues items and never waits on the disk (unless asked to); one thread
writes them in order. What cannot be queued or written is dropped and counted by reason.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

CLOSE_TIMEOUT_S = 120.0  # stop() gives the writer this long to drain its queue
_STOP = object()


class WriterFailed(Exception):
    """Raised by a sink's `write` callback: stop writing; the message says why."""


class WriterThread:
    """Hands queued items to `write` on one daemon thread, in order; counts drops by reason.

    When `write` raises WriterFailed, `error` keeps its message and that item and every later
    one are dropped as `writer_error`. `finish` runs on the thread after the last item.
    """

    def __init__(
        self,
        name: str,
        size: int,
        write: Callable[[Any], None],
        finish: Callable[[], None] | None = None,
    ) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self._lock = threading.Lock()
        self._drops: dict[str, int] = {}
        self._pending = 0  # queued or being written
        self._write = write
        self._finish = finish
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any, wait: bool = False) -> bool:
        """Queue `item`; True if queued. Without `wait` a full queue drops it (`sink_overflow`)."""
        try:
            self._queue.put(item, block=wait)
        except queue.Full:
            self.drop("sink_overflow")
            return False
        with self._lock:
            self._pending += 1
        return True

    def pending(self) -> int:
        """Items queued or being written: not on disk yet."""
        with self._lock:
            return self._pending

    def drop(self, reason: str) -> None:
        with self._lock:
            self._drops[reason] = self._drops.get(reason, 0) + 1

    def drops(self) -> dict[str, int]:
        with self._lock:
            return dict(self._drops)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                if self.error is not None:
                    self.drop("writer_error")
                    continue
                try:
                    self._write(item)
                except WriterFailed as e:
                    self.error = str(e)
                    self.drop("writer_error")
            finally:
                with self._lock:
                    self._pending -= 1
        if self._finish is not None:
            self._finish()

    def stop(self) -> bool:
        """Let the thread write every queued item and end, within CLOSE_TIMEOUT_S in all.

        False if it is still running then."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        with suppress(queue.Full):
            self._queue.put(_STOP, timeout=CLOSE_TIMEOUT_S)  # room comes as the writer drains
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()
