"""Per-stage live figures from the stats channel: rates and percentiles over a recent window.

Each stats message holds every stage's cumulative counters and histograms; a window's figures
are the newest totals minus the totals of `window_s` ago (histograms subtract bucket by bucket,
so the percentiles keep the histogram's 0.5% error). Restarted stages add up over their
incarnations, as in the run report. With several streams, `stream_rows()` gives the same per
stream: captured and delivered rates, glass-to-glass percentiles, drops over all stages.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stream.histogram import Histogram
from stream.report import StageTotals, totals_from_snapshots
from stream.stats import GLASS_MS, QUEUE_MS, STAGE_MS

# counters that mean "a frame missed a budget", by stage kind
MISS_COUNTERS = ("budget_misses", "stage_overruns")


@dataclass
class StageRow:
    """What `top` shows for one stage."""

    stage: str
    kind: str
    incarnations: int
    fps_in: float | None
    fps_out: float | None
    stage_ms: tuple[float | None, float | None]  # p50, p99 over the window
    queue_ms: tuple[float | None, float | None]
    glass_ms: tuple[float | None, float | None]
    drops: dict[str, int] = field(default_factory=dict)  # cumulative, by reason
    misses: int = 0


@dataclass
class StreamRow:
    """What `top` shows for one stream (pipelines of several streams)."""

    stream: str
    fps_captured: float | None
    fps_delivered: float | None
    glass_ms: tuple[float | None, float | None]
    drops: dict[str, int] = field(default_factory=dict)  # cumulative, all stages, by reason


def _stream_sums(
    totals: dict[str, StageTotals], stream: str, render_ids: set[str]
) -> tuple[int, int, Histogram | None, dict[str, int]]:
    """(captured, delivered, glass histogram, drops) of `stream` over all stages."""
    captured = delivered = 0
    glass: Histogram | None = None
    drops: dict[str, int] = {}
    for sid, t in totals.items():
        per = t.streams.get(stream)
        if per is None:
            continue
        captured += per.counters["captured"]
        if sid in render_ids:
            delivered += per.counters["out"]
            if GLASS_MS in per.hists:
                glass = Histogram() if glass is None else glass
                glass.merge(per.hists[GLASS_MS])
        for reason, n in per.drops.items():
            drops[reason] = drops.get(reason, 0) + n
    return captured, delivered, glass, drops


def _window_pct(new: Histogram | None, old: Histogram | None) -> tuple[float | None, float | None]:
    if new is None:
        return None, None
    h = new.minus(old) if old is not None else new
    if h.count == 0:
        return None, None
    return h.percentile(50), h.percentile(99)


def _rate(new: int, old: int, dt_s: float) -> float | None:
    return (new - old) / dt_s if dt_s > 0 else None


class LiveView:
    """Feed it stats messages (`update`); `rows()` gives the current per-stage figures."""

    def __init__(self, window_s: float = 5.0):
        self.window_ns = int(window_s * 1e9)
        self.history: deque[tuple[int, dict[str, StageTotals]]] = deque()
        self.meta: dict[str, Any] = {}

    def update(self, msg: dict[str, Any]) -> None:
        self.meta = {k: v for k, v in msg.items() if k != "snapshots"}
        now = int(msg["now_ns"])
        self.history.append((now, totals_from_snapshots(msg["snapshots"])))
        # keep one entry at least window_s old, to subtract from
        while len(self.history) > 2 and now - self.history[1][0] >= self.window_ns:
            self.history.popleft()

    def stage_ids(self) -> list[str]:
        ids = [s["id"] for s in self.meta.get("stages", []) if isinstance(s, dict) and "id" in s]
        if self.history:
            ids += [sid for sid in self.history[-1][1] if sid not in ids]
        return ids

    def streams(self) -> list[str]:
        """The stream ids seen so far, in order of appearance."""
        if not self.history:
            return []
        out: list[str] = []
        for t in self.history[-1][1].values():
            out += [x for x in t.streams if x not in out]
        return out

    def stream_rows(self) -> list[StreamRow]:
        """Per-stream figures over the window (empty with fewer than two streams)."""
        streams = self.streams()
        if len(streams) < 2:
            return []
        t_new, new = self.history[-1]
        t_old, old = self.history[0]
        dt = (t_new - t_old) / 1e9
        kinds = {s.get("id"): s.get("kind", "") for s in self.meta.get("stages", [])}
        renders = {sid for sid, t in new.items() if (kinds.get(sid) or t.info.get("kind")) == "render"}
        rows = []
        for x in streams:
            cap, out, glass, drops = _stream_sums(new, x, renders)
            if len(self.history) > 1:
                cap0, out0, glass0, _ = _stream_sums(old, x, renders)
                fps_cap, fps_out = _rate(cap, cap0, dt), _rate(out, out0, dt)
            else:
                glass0, fps_cap, fps_out = None, None, None
            rows.append(StreamRow(x, fps_cap, fps_out, _window_pct(glass, glass0), drops))
        return rows

    def rows(self) -> list[StageRow]:
        if not self.history:
            return []
        t_new, new = self.history[-1]
        t_old, old = self.history[0]
        dt = (t_new - t_old) / 1e9
        kinds = {s.get("id"): s.get("kind", "") for s in self.meta.get("stages", [])}
        rows = []
        for sid in self.stage_ids():
            n = new.get(sid)
            o = old.get(sid) if len(self.history) > 1 else None
            if n is None:  # listed in the config, no stats yet
                none = (None, None)
                rows.append(StageRow(sid, kinds.get(sid, ""), 0, None, None, none, none, none))
                continue
            oc = o.counters if o is not None else None
            in_key = "captured" if n.counters.get("captured") else "in"
            rows.append(
                StageRow(
                    stage=sid,
                    kind=kinds.get(sid, "") or str(n.info.get("kind", "")),
                    incarnations=n.incarnations,
                    fps_in=_rate(n.counters[in_key], oc[in_key], dt) if oc is not None else None,
                    fps_out=_rate(n.counters["out"], oc["out"], dt) if oc is not None else None,
                    stage_ms=_window_pct(
                        n.hists.get(STAGE_MS), o.hists.get(STAGE_MS) if o else None
                    ),
                    queue_ms=_window_pct(
                        n.hists.get(QUEUE_MS), o.hists.get(QUEUE_MS) if o else None
                    ),
                    glass_ms=_window_pct(
                        n.hists.get(GLASS_MS), o.hists.get(GLASS_MS) if o else None
                    ),
                    drops=dict(n.drops),
                    misses=sum(n.counters[c] for c in MISS_COUNTERS),
                )
            )
        return rows
