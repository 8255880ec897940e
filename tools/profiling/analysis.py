"""The profiler's figures: per-stage and end-to-end latency, fps, jitter, drops, budget verdicts;
with several streams also end to end per stream (each against its own budget).

Percentiles here are exact (numpy, nearest rank: `method="inverted_cdf"`) over the frames'
records, warm-up frames excluded. The run report's come from the stages' histograms (within
0.5%); `compare_with_report` checks that the two agree on the same run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.histogram import REL_ERROR

from .records import FrameRecord, FrameTable

PERCENTILES = (10, 50, 90, 95, 99, 99.9)
LOST_IN_LINK = "lost_in_link"  # left a stage, never reached the next (a live link skipped it)


@dataclass(frozen=True)
class StageInfo:
    """What the profiler needs to know about a stage from the config."""

    id: str
    kind: str
    budget_ms: float | None = None  # the stage's own budget (stage_budget_ms), if any
    next_on_path: str | None = None  # the stage its frames go to on the way to a render stage


def _key(p: float) -> str:
    return f"p{p:g}".replace(".", "_")


def _r(x: float) -> float:
    return round(float(x), 3)


def latency(values_ms: list[float]) -> dict[str, Any]:
    """count, p10..p99.9, min, max, mean, tail (max - p95), flatness (p90 - p10), in ms."""
    a = np.asarray(values_ms, dtype=np.float64)
    out: dict[str, Any] = {"count": int(a.size)}
    if a.size == 0:
        out.update({_key(p): None for p in PERCENTILES})
        out.update(min=None, max=None, mean=None, tail=None, flatness=None)
        return out
    pct = {p: float(np.percentile(a, p, method="inverted_cdf")) for p in PERCENTILES}
    out.update({_key(p): _r(v) for p, v in pct.items()})
    out.update(
        min=_r(a.min()),
        max=_r(a.max()),
        mean=_r(a.mean()),
        tail=_r(a.max() - pct[95]),
        flatness=_r(pct[90] - pct[10]),
    )
    return out


def cadence(times_ns: list[int]) -> dict[str, Any]:
    """fps and frame-interval figures of a stage's output times: jitter is the intervals' std."""
    t = np.sort(np.asarray(times_ns, dtype=np.int64))
    if t.size < 2 or t[-1] == t[0]:
        return {"fps": None, "interval_p50_ms": None, "interval_max_ms": None, "jitter_ms": None}
    iv = np.diff(t) / 1e6
    return {
        "fps": round(float((t.size - 1) / ((t[-1] - t[0]) / 1e9)), 2),
        "interval_p50_ms": _r(np.percentile(iv, 50, method="inverted_cdf")),
        "interval_max_ms": _r(iv.max()),
        "jitter_ms": _r(iv.std()),
    }


def fate(f: FrameRecord, stages: dict[str, StageInfo]) -> tuple[str, str]:
    """(stage, reason) where a frame that was not delivered ended; ("", "") if delivered."""
    if f.delivered:
        return "", ""
    d = f.drop()
    if d is not None:
        return d.stage, d.reason
    path = f.path()
    if not path:
        return "", LOST_IN_LINK
    last = stages.get(path[-1].stage)
    return (last.next_on_path or "") if last else "", LOST_IN_LINK


def components(f: FrameRecord) -> list[tuple[str, float]]:
    """Glass-to-glass split along the frame's path: the first stage from capture, then
    alternately link (previous end -> next start) and stage, the last stage up to the handoff.
    A stage's share ends at the latest where the next one starts (a process descheduled right
    after it handed the frame on ends its own span later than the next stage starts), so no
    part is negative and the parts add up to the frame's glass-to-glass time."""
    if not f.handoffs():
        return []
    path = f.path()
    last = next(i for i, v in enumerate(path) if v.handoff_ns is not None)
    path = path[: last + 1]
    out: list[tuple[str, float]] = []
    start = f.capture_ns
    for i, v in enumerate(path):
        if v.handoff_ns is not None:
            out.append((v.stage, (v.handoff_ns - start) / 1e6))
            break
        nxt = path[i + 1].start_ns
        end = max(start, min(v.end_ns, nxt))
        out.append((v.stage, (end - start) / 1e6))
        out.append((f"{v.stage}->{path[i + 1].stage}", (max(nxt, end) - end) / 1e6))
        start = max(nxt, end)
    return out


def summarize(
    table: FrameTable,
    stages: list[StageInfo],
    budget_ms: float,
    pass_percentile: float = 99.0,
) -> dict[str, Any]:
    """The summary: end to end, per stage, per link, and frame fates (warm-up excluded)."""
    by_id = {s.id: s for s in stages}
    frames = [f for f in table.ordered() if not f.warmup]
    delivered = [f for f in frames if f.delivered]
    drops_e2e: Counter[str] = Counter()
    drops_at: dict[str, Counter[str]] = {s.id: Counter() for s in stages}
    for f in frames:
        stage, reason = fate(f, by_id)
        if reason:
            drops_e2e[reason] += 1
            drops_at.setdefault(stage or "?", Counter())[reason] += 1
    g2g = [f.glass_ms for f in delivered]
    e2e = _delivery(frames, drops_e2e, budget_ms)
    timed = [g for g in g2g if g is not None]
    pv = e2e.get(_key(pass_percentile)) or (
        _r(float(np.percentile(timed, pass_percentile, method="inverted_cdf"))) if timed else None
    )
    e2e.update(
        verdict=None if pv is None else ("PASS" if pv <= budget_ms else "FAIL"),
        verdict_rule=f"p{pass_percentile:g} glass-to-glass <= {budget_ms:g} ms",
    )
    stream_rows = _per_stream(frames, by_id, pass_percentile)
    stage_rows: dict[str, Any] = {}
    for s in stages:
        visits = [f.visits[s.id] for f in frames if s.id in f.visits]
        timed = [v.ms for v in visits if v.timed]
        row = {"kind": s.kind, **latency(timed)}
        outs = [
            v.handoff_ns if v.handoff_ns is not None else v.end_ns
            for v in visits
            if v.event == "out"
        ]
        row.update(cadence(outs))  # type: ignore[arg-type]
        row["frames_out"] = len(outs)
        row["drops"] = dict(sorted(drops_at.get(s.id, Counter()).items()))
        row["budget_ms"] = s.budget_ms
        if s.budget_ms is not None and timed:
            over = sum(t > s.budget_ms for t in timed)
            row["budget_misses"] = int(over)
            row["budget_miss_rate"] = round(over / len(timed), 4)
            p = np.percentile(timed, pass_percentile, method="inverted_cdf")
            row["verdict"] = "PASS" if p <= s.budget_ms else "FAIL"
        else:
            row.update(budget_misses=None, budget_miss_rate=None, verdict=None)
        stage_rows[s.id] = row
    parts: dict[str, list[float]] = {}
    for f in delivered:
        for name, ms in components(f):
            parts.setdefault(name, []).append(ms)
    links = {name: latency(v) for name, v in parts.items() if "->" in name}
    tail_cut = e2e.get("p99")
    breakdown = {
        "mean": {n: _r(float(np.mean(v))) for n, v in parts.items()},
        "median_frame": {},
        "tail_frames": {},
    }
    if delivered:
        comps = [dict(components(f)) for f in delivered]
        median_frame = comps[int(np.argsort(g2g)[len(g2g) // 2])]  # type: ignore[arg-type]
        breakdown["median_frame"] = {n: _r(v) for n, v in median_frame.items()}
        tail = [
            c for c, g in zip(comps, g2g, strict=True) if tail_cut is not None and g >= tail_cut
        ]  # type: ignore[operator]
        breakdown["tail_frames"] = (
            {n: _r(float(np.mean([c.get(n, 0.0) for c in tail]))) for n in parts} if tail else {}
        )
    return {
        "end_to_end": e2e,
        "streams": stream_rows,
        "stages": stage_rows,
        "links": links,
        "breakdown_ms": breakdown,
        "frames": {
            "recorded": len(table.frames),
            "warmup_excluded": len(table.frames) - len(frames),
            "analysed": len(frames),
        },
    }


def _delivery(frames: list[FrameRecord], drops: Counter[str], budget_ms: float) -> dict[str, Any]:
    """Glass-to-glass latency and cadence of the delivered ones of `frames`, how many were
    captured and delivered, the drops by reason and the misses of `budget_ms`."""
    delivered = [f for f in frames if f.delivered]
    row = latency([f.glass_ms for f in delivered if f.glass_ms is not None])
    row.update(cadence([f.handoffs()[0].handoff_ns for f in delivered]))  # type: ignore[misc]
    misses = sum(f.budget_miss for f in delivered)
    row.update(
        captured=len(frames),
        delivered=len(delivered),
        drops=dict(sorted(drops.items())),
        budget_ms=budget_ms,
        budget_misses=int(misses),
        budget_miss_rate=round(misses / len(delivered), 4) if delivered else None,
    )
    return row


def _per_stream(
    frames: list[FrameRecord], by_id: dict[str, StageInfo], pass_percentile: float
) -> dict[str, Any]:
    """End to end per stream (only with several): glass-to-glass, fps, fates, and the verdict
    against the stream's own budget (its frames' deadline - capture)."""
    streams = sorted({f.stream for f in frames})
    if len(streams) < 2:
        return {}
    out: dict[str, Any] = {}
    for x in streams:
        mine = [f for f in frames if f.stream == x]
        drops = Counter(r for f in mine for _, r in [fate(f, by_id)] if r)
        budget = round((mine[0].deadline_ns - mine[0].capture_ns) / 1e6, 3)
        g2g = [f.glass_ms for f in mine if f.delivered and f.glass_ms is not None]
        pv = float(np.percentile(g2g, pass_percentile, method="inverted_cdf")) if g2g else None
        out[x] = _delivery(mine, drops, budget)
        out[x]["verdict"] = None if pv is None else ("PASS" if pv <= budget else "FAIL")
    return out


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= REL_ERROR * max(abs(a), abs(b)) + 0.002


def compare_with_report(summary: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Check the profile against `medstream run`'s report of the same run (warm-up 0): counts
    equal, percentiles within the histogram's error. Returns {"ok": bool, "checks": [...]}."""
    checks: list[dict[str, Any]] = []

    def check(what: str, mine: Any, theirs: Any, exact: bool) -> None:
        ok = mine == theirs if exact else _close(mine, theirs)
        checks.append({"what": what, "profile": mine, "report": theirs, "ok": ok})

    e2e, frames = summary["end_to_end"], report["frames"]
    check("frames delivered", e2e["delivered"], frames["delivered"], True)
    check("frames dropped", sum(e2e["drops"].values()), frames["dropped_total"], True)
    g = report["latency_ms"]["glass_to_glass"]
    for k in ("p50", "p90", "p99", "max"):
        check(f"glass-to-glass {k}", e2e[k], g[k], False)
    check("budget misses", e2e["budget_misses"], report["budget"]["misses"], True)
    for sid, row in summary["stages"].items():
        theirs = report["latency_ms"]["stages"].get(sid)
        if theirs is None:
            continue
        check(f"stage {sid} count", row["count"], theirs["count"], True)
        for k in ("p50", "p90", "p99", "max"):
            check(f"stage {sid} {k}", row[k], theirs[k], False)
    return {"ok": all(c["ok"] for c in checks), "checks": checks}
