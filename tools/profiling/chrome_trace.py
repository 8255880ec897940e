"""A Chrome Trace Event timeline of the profiled frames, for https://ui.perfetto.dev (or
chrome://tracing).

One process (the pipeline), one thread lane per stage. Every stage's work on a frame is a
complete event ("X") named by the frame's sequence number, with the frame's ids in `args`; a
flow ("s"/"t"/"f") links the events of one frame across the lanes; instant events ("i") mark
budget misses (on the render lane, at the handoff) and drops (on the dropping stage's lane).
Events in a lane never overlap: if a stage ever had two frames at once (a restart overlapping
its old process), the later ones go to an extra lane named "<stage> (2)".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .analysis import StageInfo, fate
from .records import FrameRecord, FrameTable

PID = 1


def _us(t_ns: int, t0_ns: int) -> float:
    return round((t_ns - t0_ns) / 1e3, 3)


class _Lanes:
    """Thread ids per stage, with extra lanes wherever events would overlap."""

    def __init__(self, stage_ids: list[str]):
        self.order = list(stage_ids)
        self.ends: dict[str, list[int]] = {}  # stage -> end time of the last event per lane
        self.tids: dict[tuple[str, int], int] = {}

    def tid(self, stage: str, lane: int = 0) -> int:
        key = (stage, lane)
        if key not in self.tids:
            if stage not in self.order:
                self.order.append(stage)
            self.tids[key] = (self.order.index(stage) + 1) * 100 + lane
        return self.tids[key]

    def place(self, stage: str, start_ns: int, end_ns: int) -> int:
        ends = self.ends.setdefault(stage, [])
        for lane, last in enumerate(ends):
            if start_ns >= last:
                ends[lane] = end_ns
                return self.tid(stage, lane)
        ends.append(end_ns)
        return self.tid(stage, len(ends) - 1)

    def metadata(self) -> list[dict[str, Any]]:
        out = []
        for (stage, lane), tid in sorted(self.tids.items(), key=lambda kv: kv[1]):
            name = stage if lane == 0 else f"{stage} ({lane + 1})"
            out.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid,
                        "args": {"name": name}})
            out.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid,
                        "args": {"sort_index": tid}})
        return out


def _frame_args(f: FrameRecord) -> dict[str, Any]:
    args: dict[str, Any] = {"stream": f.stream, "epoch": f.epoch, "seq": f.seq}
    if f.glass_ms is not None:
        args["glass_to_glass_ms"] = round(f.glass_ms, 3)
    if f.warmup:
        args["warmup"] = True
    return args


def _instant(name: str, cat: str, tid: int, ts: float, args: dict[str, Any]) -> dict[str, Any]:
    """An instant event ("i") on one lane."""
    return {"ph": "i", "s": "t", "name": name, "cat": cat, "pid": PID, "tid": tid, "ts": ts,
            "args": args}


def build_trace(
    table: FrameTable, stages: list[StageInfo], pipeline: str, budget_ms: float
) -> dict[str, Any]:
    """The trace as a JSON-able dict (`{"traceEvents": [...], ...}`)."""
    frames = table.ordered()
    by_id = {s.id: s for s in stages}
    lanes = _Lanes([s.id for s in stages])
    t0 = min((f.capture_ns for f in frames), default=0)
    for f in frames:  # the earliest event may start before its capture (the source read)
        for v in f.visits.values():
            t0 = min(t0, v.start_ns)
    events: list[dict[str, Any]] = []
    # place every stage's events in start order so lanes are assigned without overlap
    visits = sorted(
        ((v.start_ns, v.stage, f, v) for f in frames for v in f.visits.values()),
        key=lambda x: (x[0], x[1]),
    )
    slices: dict[tuple, list[tuple[int, float]]] = {}  # frame key -> [(tid, ts)] for flows
    for _, stage, f, v in visits:
        end = max(v.end_ns, v.handoff_ns or 0, v.start_ns)
        tid = lanes.place(stage, v.start_ns, end)
        ts = _us(v.start_ns, t0)
        args = _frame_args(f)
        if v.event == "drop":
            args["dropped"] = v.reason
        cat = "frame" if v.event == "out" else "dropped"
        dur = round((end - v.start_ns) / 1e3, 3)
        events.append({"ph": "X", "name": f"seq {f.seq}", "cat": cat, "pid": PID, "tid": tid,
                       "ts": ts, "dur": dur, "args": args})
        slices.setdefault(f.key, []).append((tid, ts))
        if v.handoff_ns is not None and v.handoff_ns > f.deadline_ns:
            miss = {**_frame_args(f), "budget_ms": budget_ms}
            events.append(_instant("budget miss", "budget", tid, _us(v.handoff_ns, t0), miss))
    for flow_id, f in enumerate(frames, start=1):
        steps = slices.get(f.key, [])
        if len(steps) >= 2:
            for i, (tid, ts) in enumerate(steps):
                ph = "s" if i == 0 else ("f" if i == len(steps) - 1 else "t")
                ev = {"ph": ph, "id": flow_id, "name": "frame", "cat": "flow", "pid": PID,
                      "tid": tid, "ts": ts}
                if ph == "f":
                    ev["bp"] = "e"
                events.append(ev)
        stage, reason = fate(f, by_id)
        if reason:
            d = f.drop()
            last_end = max((v.end_ns for v in f.visits.values()), default=f.capture_ns)
            at = d.end_ns if d is not None else last_end
            tid = lanes.tid(stage or (f.path()[-1].stage if f.visits else "?"))
            why = {**_frame_args(f), "reason": reason}
            events.append(_instant(f"drop: {reason}", "drop", tid, _us(at, t0), why))
    meta = [
        {"ph": "M", "name": "process_name", "pid": PID, "args": {"name": f"medstream {pipeline}"}}
    ]
    return {
        "traceEvents": meta + lanes.metadata() + events,
        "displayTimeUnit": "ms",
        "otherData": {"pipeline": pipeline, "budget_ms": budget_ms, "t0_ns": t0},
    }


def write_trace(path: Path, trace: dict[str, Any]) -> None:
    path.write_text(json.dumps(trace, separators=(",", ":")))


def check_trace(trace: Any) -> list[str]:
    """Problems that would make the trace invalid or misleading (empty list: fine): required
    fields per phase, non-negative durations, no overlapping "X" events within a lane."""
    problems: list[str] = []
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["not an object with a traceEvents list"]
    lanes: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for i, ev in enumerate(trace["traceEvents"]):
        ph = ev.get("ph") if isinstance(ev, dict) else None
        if ph not in ("X", "i", "s", "t", "f", "M"):
            problems.append(f"event {i}: unknown phase {ph!r}")
            continue
        need = ("name", "pid") + (("tid", "ts") if ph != "M" else ())
        missing = [k for k in need if k not in ev]
        if missing:
            problems.append(f"event {i} ({ph}): missing {missing}")
            continue
        if ph in ("s", "t", "f") and "id" not in ev:
            problems.append(f"event {i}: flow event without id")
        if ph == "X":
            if not isinstance(ev.get("dur"), (int, float)) or ev["dur"] < 0:
                problems.append(f"event {i}: X event needs dur >= 0")
                continue
            lanes.setdefault((ev["pid"], ev["tid"]), []).append((ev["ts"], ev["ts"] + ev["dur"]))
    for (pid, tid), spans in lanes.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            if start < end - 1e-6:
                problems.append(f"lane {pid}/{tid}: events overlap at ts {start}")
                break
    return problems
