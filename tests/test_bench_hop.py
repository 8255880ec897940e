"""The hop bench starts its receivers without numpy's OpenBLAS pool thread (whose start-up spin
fell inside the measured window) and leaves the bench's own environment as it was."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from tools.bench.hop import CTX, start_without_blas_pool


def report_threads(out: Any) -> None:
    """Child: the environment variable and this process's threads after importing numpy."""
    import numpy  # noqa: F401  (OpenBLAS starts its pool here)

    out.put((os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task"))))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
@pytest.mark.parametrize("before", [None, "4"])
def test_receiver_starts_without_blas_pool(
    monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    if before is None:
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", before)
    out = CTX.Queue()
    child = CTX.Process(target=report_threads, args=(out,))
    start_without_blas_pool(child)
    try:
        env, threads = out.get(timeout=60)
    finally:
        child.join(30)
    assert env == "1"
    assert threads == 1, f"{threads} threads in the receiver after importing numpy"
    assert os.environ.get("OPENBLAS_NUM_THREADS") == before  # the bench's own is unchanged
