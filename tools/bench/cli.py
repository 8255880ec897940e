"""`medstream bench`: each result next to its floor, in one run; JSON + a markdown table.

    medstream bench                 # a few minutes: transport, slow consumer, demo pipelines
    medstream bench --quick         # well under a minute (what the tests run)
    medstream bench --only transport --out out/bench
    medstream bench --only overlay  # per-frame cost of the imaging region and overlay policy
    medstream bench --only sources  # per-frame cost of the synthetic sources (phantom, endoscopy)
    medstream bench --only multistream  # 4 streams: batched infer vs batch 1 vs 4 pipelines
    medstream bench --only recorder     # 1080p BGR at 60 fps to disk vs one in-process writer

Benchmarks are not tests: every figure is printed next to the floor measured in the same run
(raw pyzmq, a memory copy, a single-process loop), with the machine and its load, since on a
shared machine the absolute numbers move with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.errors import writable_folder
from tools.extras import require

from .hop import SIZES, Case, copy_floor, run_case
from .machine import describe, load_average
from .multistream import bench_multistream
from .overlay import bench_overlay
from .pipelines import bench_scene
from .recorder import bench_recorder
from .results import markdown, median_rows, targets
from .sources import bench_sources

PARTS = ("transport", "slow", "pipelines", "overlay", "sources", "multistream", "recorder")
ROUNDS = 5  # paired rounds of the transport cases (full mode): a median of 3 moved with one lucky round
QUICK_SKIPS = ("multistream",)  # --quick leaves it out unless --only names it (three runs)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bench_transport(quick: bool, tmp: Path) -> dict[str, Any]:
    """Paced hops, the CURVE pair and the lossless pair run in ROUNDS rounds, each round every
    transport of a case once, in alternating order: the machine's state drifts between runs
    (on a shared 2-core machine a raw hop's p50 moved 0.24 -> 0.51 ms from one run to the
    next), so a ratio is judged by the median of its rounds' ratios (`rounds`), and the
    tables show each figure's median over the rounds."""
    transports = (
        ["pyzmq-tcp", "medstream-tcp", "medstream-shm"]
        if quick
        else ["pyzmq-tcp", "medstream-tcp", "pyzmq-ipc", "medstream-shm"]
    )
    rates = [60.0] if quick else [30.0, 60.0]
    rounds = 1 if quick else ROUNDS
    frames = 40 if quick else 160
    seconds = 0.7 if quick else 2.0
    runs: list[dict[str, Any]] = []  # every round's rows

    def paired(trs: list[str], size: str, fps: float, n: int, secs: float = 0.0) -> None:
        for r in range(rounds):
            for tr in trs if r % 2 == 0 else trs[::-1]:
                pace = f"at {fps:g} fps" if fps else "unpaced"
                _say(f"bench: hop {tr} {size} {pace} (round {r + 1} of {rounds})")
                row = run_case(Case(tr, size, fps, n, seconds=secs), tmp)
                runs.append({**row, "round": r})

    unpaced, copies = [], []
    for size in SIZES:
        copies.append(copy_floor(size, 200))
        floor = ["medstream-decode"] if size.startswith("512") else []  # where bookkeeping shows
        for fps in rates:
            paired(transports + floor, size, fps, frames)
        if quick and not size.startswith("1080"):
            continue
        for tr in transports:
            _say(f"bench: hop {tr} {size} unpaced")
            unpaced.append(run_case(Case(tr, size, 0.0, 0, seconds=seconds), tmp))
    paired(["pyzmq-curve", "medstream-curve"], "1080x1920x3", 30.0, frames)  # CURVE
    paired(["pyzmq-pushpull", "medstream-lossless"], "1080x1920x3", 0.0, 0, seconds)  # lossless
    paced = median_rows([r for r in runs if r["fps_target"]])
    unpaced += median_rows([r for r in runs if not r["fps_target"]])
    return {"paced": paced, "unpaced": unpaced, "copy": copies, "rounds": runs}


def bench_slow_consumer(quick: bool, tmp: Path) -> list[dict[str, Any]]:
    size = "512x512 gray" if quick else "1080x1920x3"
    transports = (
        ["medstream-shm", "pyzmq-tcp"] if quick else ["medstream-tcp", "medstream-shm", "pyzmq-tcp"]
    )
    frame_mb = math.prod(SIZES[size]) / 2**20
    rows = []
    for tr in transports:
        _say(f"bench: slow consumer on {tr} {size}")
        seconds = 1.5 if quick else (3.0 if tr.startswith("pyzmq") else 5.0)
        row = run_case(Case(tr, size, 60.0, 0, work_ms=50.0, seconds=seconds), tmp)
        row["memory_growth_frames"] = round(row["receiver_memory_growth_mb"] / frame_mb, 1)
        rows.append(row)
    return rows


def bench_pipelines(quick: bool, tmp: Path, out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seconds, warmup = (3.0, 10) if quick else (10.0, 30)
    scenes = ["ultrasound 512x512"] if quick else ["ultrasound 512x512", "1080p surgical"]
    for scene in scenes:
        _say(f"bench: pipeline {scene}")
        got = bench_scene(scene, 30.0, seconds, warmup, tmp, out / "profiles")
        rows += got[:1] if quick else got
    return rows


def run_bench(quick: bool, only: list[str], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": describe(), "mode": "quick" if quick else "full"}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="medstream-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if "transport" in only:
            result["transport"] = bench_transport(quick, tmp)
        if "slow" in only:
            result["slow_consumer"] = bench_slow_consumer(quick, tmp)
        if "pipelines" in only:
            result["pipelines"] = bench_pipelines(quick, tmp, out)
        if "overlay" in only:
            _say("bench: imaging region and overlay policy")
            result["overlay"] = bench_overlay(60 if quick else 300)
        if "sources" in only:
            _say("bench: synthetic sources")
            result["sources"] = bench_sources(30 if quick else 120)
        if "multistream" in only:
            result["multistream"] = bench_multistream(quick, tmp, _say)
        if "recorder" in only:
            result["recorder"] = bench_recorder(quick, tmp, _say)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["load_average_at_end"] = load_average()
    result["targets"] = targets(result)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(result))
    return result


def _cmd(args: argparse.Namespace) -> int:
    only = [p.strip() for p in args.only.split(",")] if args.only else list(PARTS)
    if args.quick and not args.only:
        only = [p for p in only if p not in QUICK_SKIPS]
    unknown = [p for p in only if p not in PARTS]
    if unknown:
        print(
            f"medstream bench: --only: unknown part {unknown[0]!r}; parts: {', '.join(PARTS)}",
            file=sys.stderr,
        )
        return 2
    if "transport" in only or "slow" in only:  # their receivers measure memory with psutil
        require("bench", "psutil")
    out = writable_folder(args.out, "the output folder")
    result = run_bench(args.quick, only, out)
    print(markdown(result))
    print(f"({result['seconds']} s; written to {out / 'bench.json'} and {out / 'bench.md'})")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark links and pipelines against their floors")
    p.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    p.add_argument("--only", default="", help=f"comma-separated parts: {', '.join(PARTS)}")
    p.add_argument("--out", default="out/bench", help="folder for bench.json and bench.md")
    p.set_defaults(func=_cmd)
