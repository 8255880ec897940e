"""A Ctrl-C before the supervisor owns SIGINT is noted, so that one Python drops is not lost.

Python raises KeyboardInterrupt wherever the main thread is. Raised inside a weakref callback or
a `__del__` (an import's module lock, a collected socket), it is printed as "Exception ignored"
and dropped: `medstream run` then started the pipeline as if no Ctrl-C had come, and ran until
the next one (1 of 80 runs interrupted 0.2-0.5 s after start). The supervisor reads the note
when it installs its own handler and stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

_received: list[int] = []


def note_interrupts() -> None:
    """SIGINT raises KeyboardInterrupt as before, and is noted (unless SIGINT is ignored, as in a
    background job: that is left as it is). A dropped one is not reported as 'Exception ignored'
    (four lines of traceback from importlib): the supervisor acts on the note."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_and_raise)
        previous = sys.unraisablehook

        def unraisable(info: Any) -> None:
            if info.exc_type is not KeyboardInterrupt:
                previous(info)

        sys.unraisablehook = unraisable


def _note_and_raise(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def interrupted_before() -> bool:
    """Whether a SIGINT came while `note_interrupts`' handler was installed."""
    return bool(_received)
