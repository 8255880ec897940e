"""Soak: run a pipeline for a long time and watch every stage process for leaks.

    medstream soak [CONFIG] --seconds 600 --fps 60 [--warmup 60] [--json out/soak.json]

The pipeline (default: the demo, its video file sink removed, the viewer on a free port and
polled once a second so its JPEG path runs too) runs under the supervisor, in the current
working directory. Every second each stage process is sampled with psutil (the `profile` extra):
resident memory, open file descriptors, threads. After the warm-up, the median of the first
`--window` seconds is the baseline and the median of the last `--window` seconds the final
value. The soak passes when, for every stage, resident memory grew less than `--max-growth`
(10%), file descriptors and threads did not grow, no stage restarted, the run ended cleanly and
its report accounts for every frame. A progress line (elapsed time and each stage's resident
memory, fds and threads) is printed every `--progress` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from stream.bundled_configs import bundled_config, resolve_config
from stream.cli import above_zero, zero_or_more
from tools.errors import writable_output
from tools.extras import require

if TYPE_CHECKING:
    import psutil

ROOT = Path(__file__).resolve().parent.parent
DEMO = bundled_config("ultrasound_seg.yaml")


def soak_config(base: Path, out_dir: Path, fps: float) -> tuple[Path, int | None]:
    """The config to soak: `base` with its run dir in `out_dir`, sources at `fps`, video file
    sinks removed and viewers on free ports. Returns (path, first viewer port or None)."""
    from tools.bench.hop import free_port

    data = yaml.safe_load(base.read_text())
    data["run_dir"] = str(out_dir / "run")
    port = None
    for stage in data["stages"]:
        if stage.get("kind") == "grab":
            stage["fps"] = fps
            stage["frames"] = 0
        if stage.get("kind") == "render":
            sinks = []
            for sink in stage.get("sinks", []):
                if sink.get("type") == "video":
                    continue
                if sink.get("type") == "viewer":
                    sink["port"] = free_port()
                    port = port or sink["port"]
                sinks.append(sink)
            stage["sinks"] = sinks
    path = out_dir / "soak.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, port


@dataclass
class Series:
    """One stage's samples: (seconds since start, rss bytes, fds, threads), per pid."""

    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


def stage_processes(sup: psutil.Process) -> dict[str, psutil.Process]:
    import psutil

    out = {}
    for child in sup.children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "stream.cli" in cmd and "stage" in cmd:
            out[cmd[-1]] = child
    return out


def sample(procs: dict[str, psutil.Process], t: float, series: dict[str, Series]) -> None:
    import psutil

    for sid, p in procs.items():
        try:
            with p.oneshot():
                row = (t, p.memory_info().rss, p.num_fds(), p.num_threads())
        except psutil.Error:
            continue
        s = series.setdefault(sid, Series())
        if not s.pids or s.pids[-1] != p.pid:
            s.pids.append(p.pid)
        s.samples.append(row)


def _median(rows: list[tuple[float, int, int, int]], i: int) -> float:
    return float(statistics.median(r[i] for r in rows)) if rows else float("nan")


def analyse(series: dict[str, Series], warmup_s: float, window_s: float, max_growth: float) -> dict[str, Any]:
    """Per stage: baseline and final medians, growth, verdict."""
    out: dict[str, Any] = {}
    for sid, s in sorted(series.items()):
        after = [r for r in s.samples if r[0] >= warmup_s]
        if not after:
            out[sid] = {"ok": False, "why": "no samples after the warm-up"}
            continue
        t_end = after[-1][0]
        base = [r for r in after if r[0] < warmup_s + window_s]
        final = [r for r in after if r[0] > t_end - window_s]
        rss0, rss1 = _median(base, 1), _median(final, 1)
        growth = rss1 / rss0 - 1.0
        fd0, fd1 = _median(base, 2), _median(final, 2)
        th0, th1 = _median(base, 3), _median(final, 3)
        why = []
        if growth >= max_growth:
            why.append(f"resident memory grew {100 * growth:.1f}%")
        if fd1 > fd0:
            why.append(f"file descriptors {fd0:g} -> {fd1:g}")
        if th1 > th0:
            why.append(f"threads {th0:g} -> {th1:g}")
        if len(s.pids) > 1:
            why.append(f"restarted ({len(s.pids) - 1} times)")
        out[sid] = {
            "ok": not why,
            "why": "; ".join(why),
            "samples": len(s.samples),
            "rss_mb": {
                "baseline": round(rss0 / 2**20, 1),
                "final": round(rss1 / 2**20, 1),
                "max_after_warmup": round(max(r[1] for r in after) / 2**20, 1),
                "growth_pct": round(100 * growth, 2),
            },
            "fds": {"baseline": fd0, "final": fd1, "max_after_warmup": max(r[2] for r in after)},
            "threads": {"baseline": th0, "final": th1, "max_after_warmup": max(r[3] for r in after)},
        }
    return out


def _poll_viewer(port: int, counts: dict[str, int]) -> None:
    """Fetch the viewer's frame once (a failure counts once the viewer has answered: before, it
    is still starting). Called right after a sample, never beside one: the request's server
    thread and socket would count as the render stage's growth."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=2) as r:
            r.read()
        counts["ok"] += 1
    except OSError:
        if counts["ok"]:
            counts["failed"] += 1


def progress_line(elapsed_s: float, series: dict[str, Series]) -> str:
    """One line: seconds so far and each stage's latest resident memory, fds and threads."""
    parts = []
    for sid, s in sorted(series.items()):
        if s.samples:
            _, rss, fds, threads = s.samples[-1]
            parts.append(f"{sid} rss {rss / 2**20:.1f} MB, fds {fds}, threads {threads}")
    return f"soak: {elapsed_s:.0f} s: " + ("; ".join(parts) or "no stage process yet")


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _run_problems(
    exit_code: int | None, report_path: Path, frames: dict[str, Any], log_path: Path
) -> list[str]:
    """Why the run itself (not a stage's growth) fails the soak, one reason each."""
    why = []
    if exit_code != 0:
        last = _last_line(log_path)
        why.append(f"the run exited with status {exit_code}" + (f" ({last})" if last else ""))
    if not report_path.exists():
        why.append(f"no run report at {report_path}")
    else:
        if not frames.get("accounted"):
            why.append("the report does not account for every frame")
        if frames.get("delivered", 0) <= 0:
            why.append("no frame was delivered")
    return why


def run_soak(
    config: Path,
    seconds: float,
    fps: float,
    warmup_s: float,
    window_s: float = 10.0,
    max_growth: float = 0.10,
    out_dir: Path | None = None,
    progress_s: float = 30.0,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Run the soak (see the module doc) and return its results (`ok` says pass or fail).
    Every `progress_s` seconds a progress line goes to `progress` (none when it is None)."""
    import psutil

    # the child runs in this working directory; absolute paths keep it independent of it
    out_dir = (out_dir or Path(tempfile.mkdtemp(prefix="medstream-soak-"))).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, port = soak_config(config, out_dir, fps)
    report_path = out_dir / "report.json"
    log_path = out_dir / "run.log"
    cmd = [sys.executable, "-m", "stream.cli", "run", str(cfg_path), "--duration", str(seconds),
           "--report", str(report_path)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    series: dict[str, Series] = {}
    polls = {"ok": 0, "failed": 0}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sup = psutil.Process(proc.pid)
        t0 = time.monotonic()
        next_progress = progress_s
        try:
            while proc.poll() is None and time.monotonic() - t0 < seconds + 60:
                procs = stage_processes(sup)
                elapsed = time.monotonic() - t0
                sample(procs, elapsed, series)
                if port is not None:
                    _poll_viewer(port, polls)
                if progress is not None and elapsed >= next_progress:
                    print(progress_line(elapsed, series), file=progress, flush=True)
                    next_progress += progress_s
                time.sleep(1.0)
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(30)
    stages = analyse(series, warmup_s, window_s, max_growth)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    frames = report.get("frames", {})
    why_not = _run_problems(proc.returncode, report_path, frames, log_path)
    if not stages:
        why_not.append("no stage process was sampled")
    return {
        "ok": not why_not and all(s["ok"] for s in stages.values()),
        "run_problems": why_not,
        "command": " ".join(cmd),
        "exit_code": proc.returncode,
        "seconds": seconds,
        "fps": fps,
        "warmup_s": warmup_s,
        "window_s": window_s,
        "max_growth_pct": 100 * max_growth,
        "stages": stages,
        "frames": frames,
        "fps_delivered": report.get("fps", {}).get("delivered"),
        "glass_to_glass_ms": report.get("latency_ms", {}).get("glass_to_glass"),
        "viewer_polls": polls,
        "out_dir": str(out_dir),
    }


def format_soak(result: dict[str, Any]) -> str:
    lines = [
        f"soak: {result['seconds']:g} s at {result['fps']:g} fps, warm-up {result['warmup_s']:g} s, "
        f"window {result['window_s']:g} s (exit {result['exit_code']})",
        f"{'stage':<10}{'rss MB base':>12}{'final':>8}{'max':>8}{'growth%':>9}"
        f"{'fds b/f/max':>14}{'threads b/f/max':>17}  verdict",
    ]
    for sid, s in result["stages"].items():
        if "rss_mb" not in s:
            lines.append(f"{sid:<10}  {s['why']}")
            continue
        r = s["rss_mb"]
        figures = ("baseline", "final", "max_after_warmup")
        fds = "/".join(f"{s['fds'][k]:g}" for k in figures)
        threads = "/".join(f"{s['threads'][k]:g}" for k in figures)
        verdict = "ok" if s["ok"] else "FAIL: " + s["why"]
        lines.append(
            f"{sid:<10}{r['baseline']:>12.1f}{r['final']:>8.1f}{r['max_after_warmup']:>8.1f}"
            f"{r['growth_pct']:>9.2f}{fds:>14}{threads:>17}  {verdict}"
        )
    fr = result["frames"]
    lines.append(
        f"frames: captured {fr.get('captured')}, delivered {fr.get('delivered')}, dropped "
        f"{fr.get('dropped')}, accounted {fr.get('accounted')}; delivered fps "
        f"{result['fps_delivered']}; viewer polls {result['viewer_polls']}"
    )
    if result["ok"]:
        lines.append("PASS")
    else:
        failed = [f"{sid}: {s['why']}" for sid, s in result["stages"].items() if not s["ok"]]
        reasons = [*result.get("run_problems", []), *failed]
        lines.append("FAIL: " + ("; ".join(reasons) or "see " + result["out_dir"]))
        lines.append(f"(run log: {Path(result['out_dir']) / 'run.log'})")
    return "\n".join(lines)


def check_times(seconds: float, warmup: float, window: float) -> str | None:
    """Why these times cannot compare anything (one line), or None when they can."""
    if warmup < 0 or window <= 0:
        return f"--warmup ({warmup:g}) must be >= 0 and --window ({window:g}) > 0"
    if seconds <= warmup + window:
        return (
            f"--seconds ({seconds:g}) must be above --warmup + --window ({warmup:g} + {window:g} s): "
            "the samples after the warm-up are the baseline and the final window"
        )
    return None


def _cmd_soak(args: argparse.Namespace) -> int:
    problem = check_times(args.seconds, args.warmup, args.window)
    if problem:
        print(f"medstream soak: {problem}", file=sys.stderr)
        return 2
    require("soak", "psutil")
    config = resolve_config(args.config) if args.config else DEMO
    if not config.is_file():
        print(f"medstream soak: no config file {str(config)!r}", file=sys.stderr)
        return 2
    json_path = Path(args.json).resolve() if args.json else None
    if json_path is not None:  # before the run, not after it
        writable_output(json_path, "the results file")
    result = run_soak(
        config, args.seconds, args.fps, args.warmup, args.window, args.max_growth / 100,
        Path(args.out) if args.out else None, args.progress, sys.stdout,
    )
    print(format_soak(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="run a pipeline long and check stages for memory/fd/thread growth")
    p.add_argument("config", nargs="?", default=None,
                   help="pipeline YAML (default: the bundled demo, configs/ultrasound_seg.yaml)")
    p.add_argument("--seconds", type=above_zero, default=600.0, help="length of the run")
    p.add_argument("--fps", type=above_zero, default=60.0, help="source frame rate")
    p.add_argument("--warmup", type=zero_or_more, default=60.0, help="seconds ignored at the start")
    p.add_argument("--window", type=above_zero, default=10.0, help="seconds in each median window")
    p.add_argument("--max-growth", type=zero_or_more, default=10.0, help="allowed RSS growth, percent")
    p.add_argument("--out", default=None, help="folder for the run (default: a temp folder)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--progress", type=above_zero, default=30.0, help="seconds between progress lines")
    p.set_defaults(func=_cmd_soak)
