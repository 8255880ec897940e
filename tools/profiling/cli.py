"""`medstream profile`: tap a pipeline for a while and write a report folder.

    medstream profile CONFIG --duration 30 --out out/profile       # tap a running pipeline
    medstream profile CONFIG --run --duration 30 --out out/profile # start it, profile all of it
    medstream profile CONFIG --link results --duration 10          # frames on a link only
    medstream profile out/scan.msrec --out out/profile-scan         # a recording (docs/recording.md)

The folder: index.html (open it), summary.json, table.md, frames.csv, trace.json (Perfetto),
latency_over_time.png, glass_to_glass.png, time_breakdown.png; with --run also run_report.json,
and summary.json's `agreement` compares the profile with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from stream.bundled_configs import resolve_config
from stream.cli import above_zero, count_or_zero, percentile
from stream.config import PipelineConfig, RenderSpec, load_config_file
from stream.recording import RecordingError
from stream.report import StageTotals, totals_from_snapshots, video_path
from stream.spec import ConfigError
from tools.errors import ToolError, writable_folder
from tools.extras import require

from .analysis import StageInfo, compare_with_report, summarize
from .chrome_trace import build_trace, write_trace
from .plots import write_plots
from .recording_source import is_recording, read_recording
from .records import FrameTable
from .tables import format_table, markdown_table, write_csv, write_html
from .tap import ProfileTap

ROOT = Path(__file__).resolve().parent.parent.parent


def stage_infos(cfg: PipelineConfig) -> list[StageInfo]:
    """Stages in config order, each with its budget and the next stage on a video path."""
    on_path: list[str] = []
    for r in cfg.stages:
        if isinstance(r, RenderSpec):
            on_path += video_path(cfg, r)
    infos = []
    for s in cfg.stages:
        nxt = None
        out = getattr(s, "output", "")
        if out:
            consumers = [
                c.id
                for c in cfg.stages
                if out in (getattr(c, "input", ""), getattr(c, "video", ""))
            ]
            preferred = [c for c in consumers if c in on_path]
            nxt = (preferred or consumers or [None])[0]
        infos.append(StageInfo(s.id, s.kind, getattr(s, "stage_budget_ms", None), nxt))
    return infos


def _counts_delta(
    first: dict[str, Any] | None, last: dict[str, Any] | None
) -> dict[str, StageTotals]:
    """Per-stage totals over the window: last minus first (whole run when first is None)."""
    new = totals_from_snapshots(last["snapshots"]) if last else {}
    if first is None:
        return new
    old = totals_from_snapshots(first["snapshots"])
    for sid, t in new.items():
        o = old.get(sid)
        if o is not None:
            t.counters.subtract(o.counters)
            t.drops.subtract(o.drops)
    return new


class Progress:
    """One status line: rewritten in place on a terminal, every 10 s otherwise."""

    def __init__(self, total_s: float | None):
        self.total_s = total_s
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.next_line = 0.0

    def show(self, table: FrameTable) -> None:
        now = time.monotonic()
        if not self.tty and now < self.next_line:
            return
        self.next_line = now + (1.0 if self.tty else 10.0)
        done = now - self.t0
        of = f"/{self.total_s:g}" if self.total_s else ""
        delivered = sum(1 for f in table.frames.values() if f.delivered)
        text = f"profile: {done:5.1f}{of} s, {len(table.frames)} frames recorded, {delivered} delivered"
        sys.stderr.write(("\r" + text) if self.tty else (text + "\n"))
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _start_run(config: str, duration: float, report: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "stream.cli", "run", config]
    cmd += ["--duration", str(duration), "--report", str(report)]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def profile(
    config: str,
    out: Path,
    duration: float,
    warmup: int,
    run: bool,
    link: str | None,
    pass_percentile: float,
    plots: bool,
) -> dict[str, Any]:
    """Tap (or start and tap) the pipeline, analyse, write the folder; returns the summary."""
    cfg = load_config_file(config)
    if link is not None and link not in cfg.links:
        raise ConfigError(f"--link: unknown link {link!r}; links: {', '.join(cfg.links)}")
    if not cfg.frame_log and link is None:
        raise ConfigError(f"{config}: frame_log is '' (off); set it, or profile a link with --link")
    out.mkdir(parents=True, exist_ok=True)
    stages = stage_infos(cfg)
    ctx = zmq.Context()
    tapped = (link, cfg.link(link).endpoint) if link is not None else None
    tap = ProfileTap(ctx, cfg.frame_log if link is None else "", cfg.stats_pub, tapped)
    progress = Progress(duration)
    start_ns = time.time_ns()
    proc = None
    run_out = ""
    try:
        if run:
            proc = _start_run(config, duration, out / "run_report.json")
            while proc.poll() is None:
                tap.poll(200)
                progress.show(tap.table)
            run_out = proc.stdout.read() if proc.stdout else ""
            end = time.monotonic() + 2.0  # the stages' last records and the final stats
            while time.monotonic() < end and not tap.final:
                tap.poll(100)
            tap.poll(300)
        else:
            end = time.monotonic() + duration
            while time.monotonic() < end:
                tap.poll(200)
                progress.show(tap.table)
            tap.poll(int(max(1000, 2 * cfg.budget_ms)))  # let frames in flight finish
    except KeyboardInterrupt:
        if proc is not None:
            proc.terminate()
    finally:
        progress.done()
        if proc is not None and proc.poll() is None:
            proc.wait(30)
        tap.close()
        ctx.term()
    until_ns = start_ns + int(duration * 1e9)
    table = tap.table
    if not run:  # only frames captured inside the window
        table.frames = {
            k: f for k, f in table.frames.items() if start_ns <= f.capture_ns <= until_ns
        }
    table.mark_warmup(warmup)
    summary = summarize(table, stages, cfg.budget_ms, pass_percentile)
    window = _counts_delta(None if run else tap.first_stats, tap.last_stats)
    summary["stats_drops"] = {
        sid: {k: v for k, v in sorted(t.drops.items()) if v} for sid, t in window.items()
    }
    summary["frame_log"] = {
        "records_invalid": table.invalid,
        "out_records": {sid: n for (sid, ev), n in sorted(table.events.items()) if ev == "out"},
        "stage_out_counters": {sid: t.counters["out"] for sid, t in window.items()},
    }
    summary["profile"] = {
        "pipeline": cfg.name,
        "config": str(config),
        "source": (f"tap on link {link!r}" if link else "frame log")
        + (" of a run started by the profiler" if run else ""),
        "duration_s": duration,
        "start_ns": start_ns,
        "warmup_frames": warmup,
        "budget_ms": cfg.budget_ms,
        "stats_messages": tap.last_stats is not None,
        "stats_messages_invalid": tap.invalid_stats,
        "run_exit": (tap.last_stats or {}).get("exit", ""),
    }
    report_path = out / "run_report.json"
    if run and report_path.exists():
        report = json.loads(report_path.read_text())
        if warmup == 0 and link is None:
            summary["agreement"] = compare_with_report(summary, report)
        else:
            summary["agreement"] = None
            summary["agreement_note"] = (
                "compare with the run report using --warmup 0 and the frame log"
            )
    write_folder(table, stages, summary, cfg.budget_ms, cfg.name, out, plots)
    if run and run_out:
        (out / "run_output.txt").write_text(run_out)
    return summary


def write_folder(
    table: FrameTable,
    stages: list[StageInfo],
    summary: dict[str, Any],
    budget_ms: float,
    name: str,
    out: Path,
    plots: bool,
) -> None:
    """summary.json, table.md, frames.csv, trace.json, the plots and index.html."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.md").write_text(markdown_table(summary) + "\n")
    write_csv(table, stages, out / "frames.csv")
    write_trace(out / "trace.json", build_trace(table, stages, name, budget_ms))
    if plots:
        write_plots(table, stages, summary, budget_ms, out)
    write_html(summary, out / "index.html")


def profile_recording(
    path: str, out: Path, warmup: int, pass_percentile: float, plots: bool
) -> dict[str, Any]:
    """The same report folder from a recording (`.msrec`) instead of a running pipeline."""
    table, info = read_recording(path)
    out.mkdir(parents=True, exist_ok=True)
    kinds = {info["stage"]: "render"}
    ids = info["stages"]
    stages = [
        StageInfo(sid, kinds.get(sid, ""), None, ids[i + 1] if i + 1 < len(ids) else None)
        for i, sid in enumerate(ids)
    ]
    table.mark_warmup(warmup)
    budget = info["budget_ms"]
    summary = summarize(table, stages, budget, pass_percentile)
    frames = table.ordered()
    span_s = (frames[-1].capture_ns - frames[0].capture_ns) / 1e9 if len(frames) > 1 else 0.0
    summary["stats_drops"] = {}
    summary["recording"] = {k: v for k, v in info.items() if k != "stages"}
    summary["profile"] = {
        "pipeline": Path(path).name,
        "config": "",
        "source": f"recording {path} (glass-to-glass: capture -> handed to the recorder)",
        "duration_s": span_s,
        "start_ns": frames[0].capture_ns if frames else 0,
        "warmup_frames": warmup,
        "budget_ms": budget,
        "stats_messages": False,
        "stats_messages_invalid": 0,
        "run_exit": "",
    }
    write_folder(table, stages, summary, budget, Path(path).name, out, plots)
    return summary


def refusals_line(summary: dict[str, Any]) -> str:
    """What the profiler refused as malformed (frame-log records, stats messages), or ''."""
    records = summary.get("frame_log", {}).get("records_invalid", 0)
    stats = summary["profile"].get("stats_messages_invalid", 0)
    if not records and not stats:
        return ""
    return (
        f"refused as malformed: {records} frame-log records, {stats} stats messages "
        "(counted in summary.json)"
    )


def _cmd(args: argparse.Namespace) -> int:
    if not args.no_plots:  # before the run: a missing plotting library must not waste it
        require("profile", "matplotlib", hint="or pass --no-plots")
    out = writable_folder(args.out, "the report folder")
    plots = not args.no_plots
    if is_recording(args.config) or args.config.endswith(".msrec"):
        try:
            summary = profile_recording(args.config, out, args.warmup, args.pass_percentile, plots)
        except RecordingError as e:  # not a recording, or its file header is damaged
            raise ToolError(str(e)) from None
    else:
        config = str(resolve_config(args.config))
        summary = profile(
            config,
            out,
            args.duration,
            args.warmup,
            args.run,
            args.link,
            args.pass_percentile,
            plots,
        )
    print(format_table(summary))
    a = summary.get("agreement")
    if a:
        bad = [c for c in a["checks"] if not c["ok"]]
        agree = len(a["checks"]) - len(bad)
        print(f"agreement with the run report: {agree}/{len(a['checks'])} checks agree")
        for c in bad:
            print(f"  differs: {c['what']}: profile {c['profile']}, report {c['report']}")
    refused = refusals_line(summary)
    if refused:
        print(refused, file=sys.stderr)
    print(f"report folder: {out} (open {out / 'index.html'})")
    frames = summary["frames"]
    if frames["analysed"] == 0:
        print(
            f"all {frames['recorded']} frames fell in the warm-up (--warmup {args.warmup} per "
            "stream): nothing left to analyse"
            if frames["recorded"]
            else "no frames were recorded: is the pipeline running, and its frame_log reachable?",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="profile a pipeline: tables, plots, Perfetto timeline")
    p.add_argument("config", help="the pipeline's config, or a recording (.msrec)")
    p.add_argument("--duration", type=above_zero, default=10.0, help="seconds to profile")
    p.add_argument("--out", default="out/profile", help="report folder")
    p.add_argument("--warmup", type=count_or_zero, default=30, help="first N frames per stream left out")
    p.add_argument(
        "--run", action="store_true", help="start the pipeline (medstream run) and profile it whole"
    )
    p.add_argument(
        "--link", default=None, help="profile the frames on this link instead of the frame log"
    )
    p.add_argument(
        "--pass-percentile", type=percentile, default=99.0, help="percentile the budget verdict uses"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=_cmd)
