"""One run per run dir: an exclusive `flock` on `run_dir/run.lock`.

The lock file says who holds it (pid, start time, config, host), so a second `medstream run`
of the same pipeline is refused at once with one line naming the first. The kernel releases a
flock when its process dies, so the lock of a run that is gone is simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

LOCK_NAME = "run.lock"


class RunDirBusy(RuntimeError):
    """Another live run holds the run dir; the message names it."""


class RunLock:
    """Hold `run_dir`'s lock from `acquire()` until `release()` (or this process ends)."""

    def __init__(self, run_dir: str | Path, config_path: str):
        self.path = Path(run_dir) / LOCK_NAME
        self.config_path = config_path
        self.fd: int | None = None
        self.previous: dict[str, Any] = {}  # what a dead run left in the file, if anything

    def acquire(self) -> None:
        """Take the lock or raise `RunDirBusy`; OSError if the run dir cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunDirBusy(
                f"run_dir {self.path.parent} is in use by another run: {describe(holder)}; "
                "stop that run first, or give this one another run_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.previous = _read(fd)
        record = {
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "config": self.config_path,
            "host": socket.gethostname(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with suppress(OSError):
                os.ftruncate(self.fd, 0)  # a clean end: nothing to take over next time
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    """'pid 123 on host h since 2026-11-30 22:58:05 UTC, config /p/x.yaml' (what is known)."""
    if not holder:
        return "pid unknown (the lock file is being written)"
    host = f" on {holder['host']}" if holder.get("host") else ""
    return (
        f"pid {holder.get('pid', '?')}{host} since {holder.get('started', '?')}, "
        f"config {holder.get('config', '?')}"
    )


def run_dir_holder(run_dir: str | Path) -> str | None:
    """One line naming the live run that holds `run_dir`, or None (creates nothing)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts only with a run's LOCK_EX
    except BlockingIOError:
        return f"run_dir {Path(run_dir)} is in use by another run: {describe(_read(fd))}"
    finally:
        os.close(fd)
    return None
