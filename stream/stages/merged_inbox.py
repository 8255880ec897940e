"""MergedInbox: several input links read as one (a render stage with `inputs: [a, b]`).

Frames are taken from the links in turn, so a busy link cannot starve the others. The end of
stream is passed on only once every link has ended (the last one's), so a stage with several
inputs runs until all of its streams are done.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..codec import KIND_EOS, Message
from .loop import Inbox

WAIT_SLICE_MS = 2  # while all links are empty, how long one of them is waited on at a time


class MergedInbox:
    def __init__(self, inboxes: Sequence[Inbox]):
        if not inboxes:
            raise ValueError("MergedInbox needs at least one inbox")
        self.inboxes = list(inboxes)
        self.ended = [False] * len(self.inboxes)
        self.next = 0  # the link asked first on the next call

    def recv(self, timeout_ms: int) -> Message | None:
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            n = len(self.inboxes)
            order = sorted(
                (i for i, ended in enumerate(self.ended) if not ended),
                key=lambda i: (i - self.next) % n,
            )
            for i in order:
                msg = self._accept(i, self.inboxes[i].recv(0))
                if msg is not None:
                    return msg
            left_ms = (deadline - time.monotonic()) * 1000.0
            if left_ms <= 0 or not order:
                return None
            first = order[0]
            msg = self._accept(first, self.inboxes[first].recv(int(min(left_ms, WAIT_SLICE_MS))))
            if msg is not None:
                return msg

    def _accept(self, i: int, msg: Message | None) -> Message | None:
        """`msg` from link `i` as the caller should see it: an eos only once all have ended."""
        if msg is None:
            return None
        self.next = (i + 1) % len(self.inboxes)
        if msg.kind != KIND_EOS:
            return msg
        self.ended[i] = True
        return msg if all(self.ended) else None
