"""Synthetic frame-log records for the profiler tests: grab -> infer -> render at 30 fps."""

from __future__ import annotations

import numpy as np

from tools.profiling.analysis import StageInfo
from tools.profiling.records import FrameTable

MS = 1_000_000
STAGES = [
    StageInfo("grab", "grab", None, "infer"),
    StageInfo("infer", "infer", 8.0, "render"),
    StageInfo("render", "render", None, None),
]


def record(stage: str, event: str, seq: int, cap: int, start: int, end: int, **extra) -> dict:
    trace = [["grab", cap - 3 * MS, cap]] + ([["infer", start, end]] if stage == "render" else [])
    return {
        "v": 1,
        "stage": stage,
        "pid": 1,
        "event": event,
        "stream": "grab",
        "epoch": 7,
        "seq": seq,
        "capture_ns": cap,
        "deadline_ns": cap + 50 * MS,
        "start_ns": start,
        "end_ns": end,
        "trace": trace,
        **extra,
    }


def synthetic_table(n: int = 200, seed: int = 0) -> tuple[FrameTable, dict]:
    """`n` frames: every 20th dropped at infer (late), every 50th lost between grab and infer,
    frame 30 misses the budget. Returns the table and the exact per-frame values used."""
    rng = np.random.default_rng(seed)
    table = FrameTable()
    truth: dict = {"glass": {}, "infer": {}, "dropped": set(), "lost": set()}
    t = 10**18
    for seq in range(n):
        cap = t + seq * 33 * MS
        grab_end = cap + int(0.5 * MS)
        table.add(record("grab", "out", seq, cap, cap - 3 * MS, grab_end))
        if seq % 50 == 49:
            truth["lost"].add(seq)
            continue
        i0 = grab_end + int(rng.uniform(0.2, 1.5) * MS)
        if seq % 20 == 19:
            table.add(record("infer", "drop", seq, cap, i0, i0, reason="late"))
            truth["dropped"].add(seq)
            continue
        infer_ms = float(rng.lognormal(1.6, 0.3))
        i1 = i0 + int(infer_ms * MS)
        table.add(record("infer", "out", seq, cap, i0, i1))
        r0 = i1 + int(rng.uniform(0.3, 2.0) * MS) + (60 * MS if seq == 30 else 0)
        handoff = r0 + int(rng.uniform(1, 3) * MS)
        table.add(record("render", "out", seq, cap, r0, handoff + MS, handoff_ns=handoff))
        truth["glass"][seq] = (handoff - cap) / 1e6
        truth["infer"][seq] = (i1 - i0) / 1e6
    return table, truth
