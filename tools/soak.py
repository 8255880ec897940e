"""Soak: run a pipeline for a long time and watch every stage process for leaks.

    medstream soak [CONFIG] --seconds 600 --fps 60 [--warmup 60] [--json out/soak.json]

The pipeline (default: the demo, its video file sink removed, the viewer on a free port and
polled once a second so its JPEG path runs too) runs under the supervisor. Every second each
stage process is sampled with psutil: resident memory, open file descriptors, threads. After the
warm-up, the median of the first `--window` seconds is the baseline and the median of the last
`--window` seconds the final value. The soak passes when, for every stage, resident memory grew
less than `--max-growth` (10%), file descriptors and threads did not grow, no stage restarted,
the run ended cleanly and its report accounts for every frame.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "ultrasound_seg.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soak_config(base: Path, out_dir: Path, fps: float) -> tuple[Path, int | None]:
    """The config to soak: `base` with its run dir in `out_dir`, sources at `fps`, video file
    sinks removed and viewers on free ports. Returns (path, first viewer port or None)."""
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
                    sink["port"] = _free_port()
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


def _poll_viewer(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=2) as r:
                r.read()
            counts["ok"] += 1
        except OSError:
            counts["failed"] += 1


def run_soak(
    config: Path,
    seconds: float,
    fps: float,
    warmup_s: float,
    window_s: float = 10.0,
    max_growth: float = 0.10,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the soak (see the module doc) and return its results (`ok` says pass or fail)."""
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="medstream-soak-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, port = soak_config(config, out_dir, fps)
    report_path = out_dir / "report.json"
    log_path = out_dir / "run.log"
    cmd = [sys.executable, "-m", "stream.cli", "run", str(cfg_path), "--duration", str(seconds),
           "--report", str(report_path)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    series: dict[str, Series] = {}
    polls = {"ok": 0, "failed": 0}
    stop = threading.Event()
    poller = threading.Thread(target=_poll_viewer, args=(port, stop, polls), daemon=True) if port else None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        sup = psutil.Process(proc.pid)
        t0 = time.monotonic()
        if poller is not None:
            poller.start()
        try:
            while proc.poll() is None and time.monotonic() - t0 < seconds + 60:
                procs = stage_processes(sup)
                sample(procs, time.monotonic() - t0, series)
                time.sleep(1.0)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.terminate()
            proc.wait(30)
    stages = analyse(series, warmup_s, window_s, max_growth)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    frames = report.get("frames", {})
    ok = (
        proc.returncode == 0
        and bool(stages)
        and all(s["ok"] for s in stages.values())
        and bool(frames.get("accounted"))
        and frames.get("delivered", 0) > 0
    )
    return {
        "ok": ok,
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
        fds = "/".join(f"{s['fds'][k]:g}" for k in ("baseline", "final", "max_after_warmup"))
        threads = "/".join(
            f"{s['threads'][k]:g}" for k in ("baseline", "final", "max_after_warmup")
        )
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
    lines.append("PASS" if result["ok"] else "FAIL")
    return "\n".join(lines)


def _cmd_soak(args: argparse.Namespace) -> int:
    result = run_soak(
        Path(args.config), args.seconds, args.fps, args.warmup, args.window, args.max_growth / 100,
        Path(args.out) if args.out else None,
    )
    print(format_soak(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="run a pipeline long and check stages for memory/fd/thread growth")
    p.add_argument("config", nargs="?", default=str(DEMO), help="pipeline YAML (default: the demo)")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--fps", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds ignored at the start")
    p.add_argument("--window", type=float, default=10.0, help="seconds in each median window")
    p.add_argument("--max-growth", type=float, default=10.0, help="allowed RSS growth, percent")
    p.add_argument("--out", default=None, help="folder for the run (default: a temp folder)")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=_cmd_soak)
