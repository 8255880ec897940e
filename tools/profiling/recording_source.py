"""Profile a recording (`.msrec`, docs/recording.md) instead of a running pipeline.

Each recorded frame carries its trace (the stages it went through before the recording render
stage) and the time it was handed to the recorder; that time plays the part of the render
stage's handoff, so glass-to-glass is capture -> recorded. Frames the recording lacks (sequence
gaps) are counted, not invented: their times are unknown.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from stream.recording import MAGIC, RecordingError, RecordingReader

from .records import FrameTable


def is_recording(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_recording(path: str | Path) -> tuple[FrameTable, dict[str, Any]]:
    """The recording's frames as a FrameTable, and what is known about it."""
    table = FrameTable()
    budgets: Counter[int] = Counter()
    bad = 0
    seqs: dict[tuple[str, int], list[int]] = {}
    order: list[str] = []
    with RecordingReader(path) as rec:
        stage = str(rec.header.get("stage") or "recorder")
        n = len(rec)
        for i, entry in enumerate(rec.frames):
            try:
                frame = rec.read_frame(i)
            except RecordingError:
                bad += 1  # a record that fails its checksum is reported, not trusted
                continue
            trace = [(s.stage, s.start_ns, s.end_ns) for s in frame.trace]
            table.add_trace(
                frame.stream,
                frame.epoch,
                frame.seq,
                frame.capture_ns,
                frame.deadline_ns,
                trace,
                stage,
                entry.recorded_ns,
            )
            budgets[frame.deadline_ns - frame.capture_ns] += 1
            seqs.setdefault((frame.stream, frame.epoch), []).append(frame.seq)
            order += [s for s, _, _ in trace if s not in order]
            if n > 2000 and i % 1000 == 0:
                print(f"profile: read {i}/{n} recorded frames", file=sys.stderr, flush=True)
        info = {
            "path": str(path),
            "stage": stage,
            "frames": n,
            "bad_records": bad + len(rec.damaged),  # failed checksums, damaged headers
            "damaged_bytes": sum(length for _, length in rec.damaged),
            "truncated_bytes": rec.truncated_bytes,
            "complete": rec.end is not None,
            "end": rec.end,
        }
    gaps = 0
    for s in seqs.values():
        s.sort()
        gaps += (s[-1] - s[0] + 1) - len(set(s)) if s else 0
    info["sequence_gaps"] = gaps
    info["budget_ms"] = budgets.most_common(1)[0][0] / 1e6 if budgets else 0.0
    info["stages"] = [*order, stage] if stage not in order else order
    return table, info
