"""The run report: every captured frame accounted for, latency percentiles, fps, accuracy.

Built from the stages' final stats snapshots (several per stage when it was restarted: their
counts and histograms add up). Frames are accounted along the path the sinks' video takes:
captured (by the sources) = delivered (by the render stages) + dropped on that path, by reason;
any remainder (frames that vanished in a crashed stage or a dead link) is reported as `lost`.

A source killed with SIGKILL never sends its final snapshot, so its last count can be behind:
every stage reports the highest sequence number it saw per (stream, epoch) (`info.seq_high`),
and a source run's captured count is at least that number + 1. The frames this adds are
`frames.captured_unreported`; the frames among them that were not delivered show up as `lost`.

A producer that sends no stats at all (a foreign one speaking docs/protocol.md, or a grab stage
whose stats never arrived) is accounted from the outside in: the first stage on the video path
records per (stream, epoch) the frames that arrived and their seq range (`info.arrived`), and
those frames count as captured (`frames.producers_without_stats`).

Several streams (several grab stages feeding one infer stage, or several infer stages one
render) are accounted each on its own as well: `streams.<id>` has the stream's frames
(captured = delivered + dropped, by reason) and its glass-to-glass percentiles, from the
per-stream figures every stage keeps (`stream.stats.StreamStats`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import GrabSpec, InferSpec, PipelineConfig, RenderSpec
from .histogram import Histogram
from .overlay_summary import format_overlay, overlay_summary
from .results_summary import BOXES_CUT, format_results, results_summary
from .security import exposed_endpoints
from .sinks.naming import drop_reason_text
from .stats import DISPLAY_MS, GLASS_MS, QUEUE_MS, STAGE_MS


class StageTotals:
    """One stage's stats summed over all its incarnations (restarts)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.hists: dict[str, Histogram] = {}
        self.info: dict[str, Any] = {}
        self.incarnations = 0
        self.first_out_ns: int | None = None
        self.last_out_ns: int | None = None
        self.streams: dict[str, StageTotals] = {}  # per stream: counters, drops, hists
        self.cpu_s = 0.0  # CPU seconds while streaming, over all incarnations

    def _add_figures(self, snap: dict[str, Any]) -> None:
        self.counters.update(snap.get("counters", {}))
        self.drops.update(snap.get("drops", {}))
        for name, d in snap.get("hists", {}).items():
            h = Histogram.from_dict(d)
            if name in self.hists:
                self.hists[name].merge(h)
            else:
                self.hists[name] = h

    def add(self, snap: dict[str, Any]) -> None:
        self.incarnations += 1
        self.cpu_s += float(snap.get("cpu_s", 0.0))
        self._add_figures(snap)
        for sid, figures in snap.get("streams", {}).items():
            self.streams.setdefault(sid, StageTotals(self.stage))._add_figures(figures)
        self.info.update(snap.get("info", {}))
        for key, pick in (("first_out_ns", min), ("last_out_ns", max)):
            v = snap.get(key)
            if v is not None:
                cur = getattr(self, key)
                setattr(self, key, v if cur is None else pick(cur, v))

    def fps(self) -> float:
        n = self.counters["out"]
        if n < 2 or self.first_out_ns is None or self.last_out_ns in (None, self.first_out_ns):
            return 0.0
        return round((n - 1) / ((self.last_out_ns - self.first_out_ns) / 1e9), 2)


def totals_from_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, StageTotals]:
    out: dict[str, StageTotals] = {}
    for snap in snapshots:
        out.setdefault(snap["stage"], StageTotals(snap["stage"])).add(snap)
    return out


def video_path(cfg: PipelineConfig, render: RenderSpec) -> list[str]:
    """Stage ids the rendered video passes through, sources first (several where several
    stages feed one link)."""
    path = [render.id]
    links = list(render.input_links())  # several inputs: each one's path
    while links:
        link = links.pop(0)
        for stage in reversed([s for s in cfg.stages if getattr(s, "output", None) == link]):
            if stage.id in path:
                continue
            path.insert(0, stage.id)
            if isinstance(stage, InferSpec):
                links.append(stage.input)
    grabs = [sid for sid in path if isinstance(cfg.stage(sid), GrabSpec)]
    return grabs + [sid for sid in path if sid not in grabs]


def _latency(h: Histogram | None, fps: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = (Histogram() if h is None else h).summary((50, 90, 99))
    return out if fps is None else {**out, "fps": fps}


def accuracy_from_confusion(confusion: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """Per-class Dice, mean foreground Dice and pixel accuracy from a truth x predicted matrix."""
    cm = np.asarray(confusion, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        return {}
    dice = {}
    for k in range(1, cm.shape[0]):
        denom = cm[k, :].sum() + cm[:, k].sum()
        if denom > 0:
            name = labels[k] if k < len(labels) else str(k)
            dice[name] = round(2 * cm[k, k] / denom, 4)
    return {
        "dice": dice,
        "mean_dice": round(float(np.mean(list(dice.values()))), 4) if dice else None,
        "pixel_accuracy": round(float(np.trace(cm) / total), 4),
        "pixels": int(total),
    }


def _reported_keys(cfg: PipelineConfig, snapshots: list[dict[str, Any]]) -> set[str]:
    grab_ids = {s.id for s in cfg.stages if isinstance(s, GrabSpec)}
    return {
        f"{snap.get('info', {}).get('stream', snap['stage'])}@{snap.get('info', {}).get('epoch', 0)}"
        for snap in snapshots
        if snap["stage"] in grab_ids
    }


def first_receivers(cfg: PipelineConfig) -> list[str]:
    """The stages that take each rendered video from its producer: the stage after the grab,
    or the first stage of a path whose producer is not in the config (a foreign one)."""
    produced = {s.output: s for s in cfg.stages if not isinstance(s, RenderSpec)}
    out: list[str] = []
    for r in (s for s in cfg.stages if isinstance(s, RenderSpec)):
        for sid in video_path(cfg, r):
            stage = cfg.stage(sid)
            if isinstance(stage, GrabSpec):
                continue
            links = stage.input_links() if isinstance(stage, RenderSpec) else [stage.input]
            feeders = [produced.get(link) for link in links]
            if any(f is None or isinstance(f, GrabSpec) for f in feeders) and sid not in out:
                out.append(sid)
    return out


def arrived_unreported(
    cfg: PipelineConfig, snapshots: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Producers that sent no stats (a foreign producer, or a grab stage whose stats never
    arrived), accounted from the outside: per `stream@epoch`, the frames its first receiving
    stage saw arrive (received, or lost on the link and counted there) and their seq range."""
    reported = _reported_keys(cfg, snapshots)
    per_stage: dict[str, dict[str, list[int]]] = {}
    for sid in first_receivers(cfg):
        got = per_stage.setdefault(sid, {})
        for snap in snapshots:
            if snap["stage"] != sid:
                continue
            for key, (n, lo, hi) in snap.get("info", {}).get("arrived", {}).items():
                if key in reported:
                    continue
                cur = got.get(key)
                got[key] = [n, lo, hi] if cur is None else [cur[0] + n, min(cur[1], lo), max(cur[2], hi)]
    out: dict[str, dict[str, Any]] = {}
    for sid, got in per_stage.items():
        for key, (n, lo, hi) in got.items():
            if key not in out or n > out[key]["frames"]:  # several paths see one producer
                out[key] = {"frames": n, "seq": [lo, hi], "counted_by": sid}
    return dict(sorted(out.items()))


def captured_by_stream(
    cfg: PipelineConfig, snapshots: list[dict[str, Any]]
) -> dict[str, tuple[int, int]]:
    """Per stream id: (captured, of which unreported), as `captured_frames` counts them."""
    grab_ids = {s.id for s in cfg.stages if isinstance(s, GrabSpec)}
    seen: dict[str, int] = {}
    for snap in snapshots:
        for key, seq in snap.get("info", {}).get("seq_high", {}).items():
            seen[key] = max(seen.get(key, -1), seq)
    out: dict[str, tuple[int, int]] = {}

    def add(stream: str, captured: int, unreported: int) -> None:
        c, u = out.get(stream, (0, 0))
        out[stream] = (c + captured, u + unreported)

    for snap in snapshots:
        if snap["stage"] not in grab_ids:
            continue
        info = snap.get("info", {})
        reported = snap.get("counters", {}).get("captured", 0)
        stream = info.get("stream", snap["stage"])
        at_least = seen.get(f"{stream}@{info.get('epoch', 0)}", -1) + 1
        add(stream, max(reported, at_least), max(0, at_least - reported))
    for key, x in arrived_unreported(cfg, snapshots).items():
        add(key.rsplit("@", 1)[0], x["frames"], x["frames"])
    return out


def captured_frames(cfg: PipelineConfig, snapshots: list[dict[str, Any]]) -> tuple[int, int]:
    """(captured, of which unreported): each source run's count, raised to the highest sequence
    number any stage saw from that run (see the module doc), plus the frames that arrived from
    producers that sent no stats (`arrived_unreported`)."""
    per = captured_by_stream(cfg, snapshots).values()
    return sum(c for c, _ in per), sum(u for _, u in per)


def _stream_renders(cfg: PipelineConfig, renders: list[RenderSpec]) -> dict[str, list[str]]:
    """The streams each render stage shows (empty: its producers are not in the config)."""
    return {r.id: [x for link in r.input_links() for x in cfg.streams_into(link)] for r in renders}


def stream_figures(
    cfg: PipelineConfig,
    snapshots: list[dict[str, Any]],
    totals: dict[str, StageTotals],
    on_path: list[str],
) -> dict[str, Any]:
    """`streams.<id>`: each stream's frames accounted on its own (captured = delivered +
    dropped by reason, `lost` for the rest), its glass-to-glass percentiles and, where a viewer
    page showed the stream's own frames, its display latency."""
    renders = [s for s in cfg.stages if isinstance(s, RenderSpec)]
    shows = _stream_renders(cfg, renders)
    budgets = {
        (s.stream or s.id): s.budget_ms or cfg.budget_ms
        for s in cfg.stages
        if isinstance(s, GrabSpec)
    }
    out: dict[str, Any] = {}
    for stream, (captured, unreported) in sorted(captured_by_stream(cfg, snapshots).items()):
        showing = [r.id for r in renders if not shows[r.id] or stream in shows[r.id]]
        expected = captured * max(1, len(showing))
        delivered = misses = 0
        glass, display = Histogram(), Histogram()
        for rid in showing:
            per = _of_stream(totals, rid, stream)
            delivered += per.counters["out"]
            misses += per.counters["budget_misses"]
            _merge_hists(per, glass, display)
        dropped, _ = _path_drops([_of_stream(totals, sid, stream) for sid in on_path])
        out[stream] = {
            "frames": _frames_figures(captured, delivered, dropped, expected, unreported),
            "budget_ms": budgets.get(stream, cfg.budget_ms),
            "budget_misses": misses,
            "latency_ms": {"glass_to_glass": glass.summary((50, 95, 99))},
        }
        if display.count:  # a viewer page showed this stream's own frames (not a composed image)
            out[stream]["latency_ms"]["display"] = display.summary((50, 95, 99))
    return out


_Totals = Callable[[str], StageTotals]  # a stage's totals by id (empty ones if it sent none)
_EMPTY = StageTotals("")  # the figures of a stage (or stream) that sent none; never added to


def _of_stream(totals: dict[str, StageTotals], sid: str, stream: str) -> StageTotals:
    """Stage `sid`'s figures for `stream` (empty ones where it has none)."""
    return totals.get(sid, _EMPTY).streams.get(stream, _EMPTY)


def _merge_hists(t: StageTotals, glass: Histogram, display: Histogram) -> None:
    """Add `t`'s glass-to-glass and display latencies to `glass` and `display`."""
    for hist, name in ((glass, GLASS_MS), (display, DISPLAY_MS)):
        if name in t.hists:
            hist.merge(t.hists[name])


def _frames_figures(
    captured: int, delivered: int, dropped: Counter[str], expected: int, unreported: int
) -> dict[str, Any]:
    """captured, delivered, dropped by reason and whether they add up (`expected`: captured
    times the render stages that should deliver each frame); `dropped` gains the frames not
    accounted otherwise as `lost`."""
    lost = expected - delivered - sum(dropped.values())
    if lost > 0:
        dropped["lost"] = lost
    return {
        "captured": captured,
        "delivered": delivered,
        "dropped": dict(sorted(dropped.items())),
        "dropped_total": sum(dropped.values()),
        "accounted": expected == delivered + sum(dropped.values()),
        "captured_unreported": unreported,
    }


def _path_drops(on_path: list[StageTotals]) -> tuple[Counter[str], Counter[str]]:
    """(dropped frames by reason, rejected messages by reason) of the stages on the video path."""
    dropped: Counter[str] = Counter()
    rejected: Counter[str] = Counter()  # invalid messages are not captured frames
    for t in on_path:
        for reason, n in t.drops.items():
            if reason.startswith("invalid:"):
                rejected[reason] += n
            elif ":" not in reason:  # prefixed drops (overlay:...) are not video frames
                dropped[reason] += n
    return dropped, rejected


def _expected_frames(
    cfg: PipelineConfig, snapshots: list[dict[str, Any]], renders: list[RenderSpec], captured: int
) -> int:
    """The frames the render stages should deliver: with several, every one should deliver
    every frame it shows, each for the streams it shows (all captured frames where its producer
    is foreign)."""
    shows = _stream_renders(cfg, renders)
    if len({tuple(sorted(v)) for v in shows.values()}) <= 1:  # all show the same streams
        return captured * max(1, len(renders))
    by_stream = captured_by_stream(cfg, snapshots)
    return sum(
        captured if not shown else sum(by_stream.get(x, (0, 0))[0] for x in shown)
        for shown in shows.values()
    )


def _sink_drops(renders: list[RenderSpec], get: _Totals) -> tuple[dict[str, int], dict[str, Any]]:
    """(`render/sink`: frames its sinks dropped, `render/sink`: those drops by reason)."""
    totals: dict[str, int] = {}
    reasons: dict[str, Any] = {}
    for r in renders:
        for sink, drops in sorted(get(r.id).info.get("sink_drops", {}).items()):
            if sum(drops.values()):
                totals[f"{r.id}/{sink}"] = sum(drops.values())
                reasons[f"{r.id}/{sink}"] = dict(sorted(drops.items()))
    return totals, reasons


def _stage_figures(
    cfg: PipelineConfig, get: _Totals, restarts: dict[str, int], on_path: list[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(`stages`, the stage latencies, the queue latencies) of the report, per stage."""
    stages: dict[str, Any] = {}
    stage_latency: dict[str, Any] = {}
    queue_latency: dict[str, Any] = {}
    for s in cfg.stages:
        t = get(s.id)
        stage_latency[s.id] = _latency(t.hists.get(STAGE_MS), t.fps())
        if QUEUE_MS in t.hists:
            queue_latency[s.id] = _latency(t.hists[QUEUE_MS])
        stages[s.id] = {
            "kind": s.kind,
            "on_video_path": s.id in on_path,
            "restarts": restarts.get(s.id, 0),
            "incarnations_reported": t.incarnations,
            "counters": dict(t.counters),
            "drops": dict(t.drops),
            "fps": t.fps(),
            "cpu_s": round(t.cpu_s, 3),
            "info": {k: v for k, v in t.info.items() if k != "confusion"},
        }
    return stages, stage_latency, queue_latency


def _counted(cfg: PipelineConfig, get: _Totals, counter: str) -> dict[str, int]:
    """Each stage's `counter`, where it is not zero."""
    return {s.id: get(s.id).counters[counter] for s in cfg.stages if get(s.id).counters[counter]}


def build_report(
    cfg: PipelineConfig,
    snapshots: list[dict[str, Any]],
    duration_s: float,
    restarts: dict[str, int],
    exit_reason: str,
) -> dict[str, Any]:
    totals = totals_from_snapshots(snapshots)

    def get(sid: str) -> StageTotals:
        return totals.get(sid, _EMPTY)

    grabs = [s for s in cfg.stages if isinstance(s, GrabSpec)]
    renders = [s for s in cfg.stages if isinstance(s, RenderSpec)]
    infers = [s for s in cfg.stages if isinstance(s, InferSpec)]
    captured, unreported = captured_frames(cfg, snapshots)
    # handed to the sinks, less what a file sink still held in the stage's last snapshot (only
    # a killed render stage leaves any: its final snapshot comes after its sinks closed)
    delivered = sum(get(s.id).counters["out"] - get(s.id).counters["sink_pending"] for s in renders)
    on_path: list[str] = []
    for r in renders:
        on_path += [sid for sid in video_path(cfg, r) if sid not in on_path]
    dropped, rejected = _path_drops([get(sid) for sid in on_path])
    expected = _expected_frames(cfg, snapshots, renders, captured)
    glass, display = Histogram(), Histogram()
    for r in renders:
        _merge_hists(get(r.id), glass, display)
    budget_misses = sum(get(r.id).counters["budget_misses"] for r in renders)
    stages, stage_latency, queue_latency = _stage_figures(cfg, get, restarts, on_path)
    sink_drops, sink_drop_reasons = _sink_drops(renders, get)
    render_infos = [get(r.id).info for r in renders]
    return {
        "pipeline": cfg.name,
        "config": cfg.source_file,
        "exit": exit_reason,
        "duration_s": round(duration_s, 3),
        "budget_ms": cfg.budget_ms,
        "frames": {
            **_frames_figures(captured, delivered, dropped, expected, unreported),
            "producers_without_stats": arrived_unreported(cfg, snapshots),
            "sink_drops": sink_drops,
            "sink_drop_reasons": sink_drop_reasons,
            "rejected_messages": dict(sorted(rejected.items())),
        },
        "clock": {"skew_events": _counted(cfg, get, "clock_skew")},
        "security": security_summary(cfg, totals),
        "fps": {
            "captured": round(sum(get(s.id).fps() for s in grabs), 2),
            "delivered": round(sum(get(r.id).fps() for r in renders), 2),
        },
        "latency_ms": {
            "glass_to_glass": _latency(glass, round(sum(get(r.id).fps() for r in renders), 2)),
            # capture -> shown in a viewer's browser, as its page reported (wall clocks)
            "display": display.summary((50, 90, 95, 99)),
            "stages": stage_latency,
            "queue": queue_latency,
        },
        "budget": {
            "misses": budget_misses,
            "miss_rate": round(budget_misses / delivered, 4) if delivered else None,
            "stage_overruns": _counted(cfg, get, "stage_overruns"),
        },
        "engines": {
            s.id: {k: get(s.id).info.get(k, "") for k in ("model", "backend", "device", "precision")}
            for s in infers
        },
        "streams": stream_figures(cfg, snapshots, totals, on_path),
        "overlay": overlay_summary(get(r.id).counters for r in renders),
        "results": results_summary(
            (get(r.id).counters for r in renders),
            next((i["result_labels"] for i in render_infos if "result_labels" in i), []),
            sum(get(s.id).counters[BOXES_CUT] for s in cfg.stages if isinstance(s, InferSpec)),
        ),
        "accuracy": {
            r.id: accuracy_from_confusion(i["confusion"], i.get("labels", []))
            for r, i in zip(renders, render_infos, strict=True)
            if "confusion" in i
        },
        "stages": stages,
    }


def security_summary(cfg: PipelineConfig, totals: dict[str, StageTotals]) -> dict[str, Any]:
    """CURVE on or off, and the refusals and failed handshakes each stage counted."""
    out: dict[str, Any] = {
        "curve": cfg.security.curve,
        "insecure_endpoints": [] if cfg.security.curve else [e for _, e in exposed_endpoints(cfg)],
    }
    for prefix in ("auth_refused", "handshake_failed"):
        out[prefix] = {
            f"{sid}/{name.split(':', 1)[1]}": n
            for sid, t in sorted(totals.items())
            for name, n in sorted(t.counters.items())
            if name.startswith(prefix + ":")
        }
    return out


def _listed(counts: dict[str, Any]) -> str:
    """`a 1, b 2`: each key with its value."""
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def sink_drop_text(sink: str, total: int, reasons: dict[str, int]) -> str:
    """`render/igtl (no client connected) 567`; several reasons each with its count."""
    counted = [(r, n) for r, n in reasons.items() if n]
    if not counted:
        return f"{sink} {total}"
    if len(counted) == 1:
        return f"{sink} ({drop_reason_text(counted[0][0])}) {total}"
    why = ", ".join(f"{drop_reason_text(r)} {n}" for r, n in counted)
    return f"{sink} ({why}) {total}"


def _stream_lines(streams: dict[str, Any]) -> list[str]:
    """One line per stream (only where there are several): its frames and glass-to-glass."""
    if len(streams) < 2:
        return []
    lines = [
        "",
        f"{'stream':<14}{'captured':>9}{'delivered':>10}{'dropped':>8}"
        f"{'p50':>8}{'p95':>8}{'p99':>8}{'budget':>8}{'misses':>8}  drops",
    ]
    for sid, s in streams.items():
        f, g = s["frames"], s["latency_ms"]["glass_to_glass"]
        why = _listed(f["dropped"])
        lines.append(
            f"{sid:<14}{f['captured']:>9}{f['delivered']:>10}{f['dropped_total']:>8}"
            f"{_fmt(g.get('p50')):>8}{_fmt(g.get('p95')):>8}{_fmt(g.get('p99')):>8}"
            f"{_fmt(float(s['budget_ms'])):>8}{s.get('budget_misses', 0):>8}  {why}"
            + ("" if f["accounted"] else "  [NOT ACCOUNTED]")
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of the report."""
    f = report["frames"]
    lines = [
        f"medstream run report: {report['pipeline']} ({report['duration_s']:.1f} s, budget {report['budget_ms']:g} ms, exit: {report['exit']})",
        f"frames: captured {f['captured']}, delivered {f['delivered']}, dropped {f['dropped_total']}"
        + (f" ({_listed(f['dropped'])})" if f["dropped"] else "")
        + ("" if f["accounted"] else "  [NOT ACCOUNTED]"),
    ]
    if f.get("producers_without_stats"):
        lines.append(
            "producers that sent no stats, counted as their frames arrived: "
            + ", ".join(
                f"{k} {v['frames']} (seq {v['seq'][0]}-{v['seq'][1]}, at {v['counted_by']})"
                for k, v in f["producers_without_stats"].items()
            )
        )
    lines += ["", f"{'latency ms':<22}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'fps':>8}"]
    rows = [("glass-to-glass", report["latency_ms"]["glass_to_glass"])]
    display = report["latency_ms"].get("display", {})
    if display.get("count"):
        rows.append((f"display ({display['count']} shown)", display))
    rows += [(f"stage {k}", v) for k, v in report["latency_ms"]["stages"].items()]
    for name, d in rows:
        lines.append(
            f"{name:<22}{_fmt(d.get('p50')):>8}{_fmt(d.get('p90')):>8}{_fmt(d.get('p99')):>8}"
            f"{_fmt(d.get('max')):>8}{_fmt(d.get('fps')):>8}"
        )
    lines += _stream_lines(report.get("streams", {}))
    skew = report.get("clock", {}).get("skew_events")
    if skew:
        lines.append(
            f"CLOCKS DISAGREE: frames arrived before they were sent ({_listed(skew)}); "
            "synchronise the hosts' clocks (PTP/NTP): budgets and latencies are unreliable"
        )
    if f.get("sink_drops"):
        lines.append(
            "sinks dropped frames they were handed: "
            + ", ".join(
                sink_drop_text(k, v, f.get("sink_drop_reasons", {}).get(k, {}))
                for k, v in f["sink_drops"].items()
            )
        )
    sec = report.get("security", {})
    if sec.get("auth_refused"):
        lines.append(f"refused peers: {_listed(sec['auth_refused'])}")
    b = report["budget"]
    lines.append(
        f"budget misses: {b['misses']}"
        + (f" ({100 * b['miss_rate']:.2f}%)" if b["miss_rate"] is not None else "")
    )
    if b.get("stage_overruns"):
        lines.append(f"stage budget overruns: {_listed(b['stage_overruns'])}")
    for sid, e in report["engines"].items():
        lines.append(
            f"engine {sid}: {e['model']} on {e['backend']} ({e['device']}, {e['precision']})"
        )
    if "overlay" in report:
        lines.append(format_overlay(report["overlay"]))
    if "results" in report:
        lines += format_results(report["results"])
    for sid, acc in report["accuracy"].items():
        if acc:
            dice = ", ".join(f"{k} {v:.3f}" for k, v in acc["dice"].items())
            lines.append(
                f"accuracy at {sid}: mean Dice {acc['mean_dice']} ({dice}); pixel accuracy {acc['pixel_accuracy']}"
            )
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
