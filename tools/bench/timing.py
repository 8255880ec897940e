"""Per-call timing shared by the bench parts that time one step at a time, and the head of their
markdown tables."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def time_calls_ms(
    fn: Callable[[int], object], calls: int, first: int = 0, warmup: int = 0
) -> np.ndarray:
    """Milliseconds of each of `calls` calls `fn(first)`, `fn(first + 1)`, ..., after `warmup`
    untimed calls `fn(0)`, ..., `fn(warmup - 1)`."""
    for i in range(warmup):
        fn(i)
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn(first + i)
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def table_head(title: str, columns: list[str]) -> list[str]:
    """A blank line, `title`, a blank line and the head of a markdown table of `columns`."""
    return ["", title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
