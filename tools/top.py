"""`medstream top`: a live terminal view of every stage of a running pipeline.

    medstream top configs/ultrasound_seg.yaml          # tap the supervisor's stats_pub
    medstream top tcp://host:5601                      # or any stats_pub endpoint
    medstream top my.yaml --collect                    # stages run alone: bind their stats_endpoint

With several streams (several grab stages), a second table gives each stream's captured and
delivered rates, glass-to-glass p50/p99 and drops. Refreshes in place on a terminal (ANSI); piped, it prints one plain table per refresh. It ends
when the pipeline ends (the supervisor's final message), after `--count` refreshes, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from typing import Any, TextIO

import zmq

from stream.cli import above_zero, count_or_zero

from .live_stats import LiveView, StageRow
from .stats_source import open_stats

CLEAR = "\x1b[H\x1b[J"  # cursor home, clear to the end of the screen


def _ms(pair: tuple[float | None, float | None]) -> str:
    if pair[0] is None:
        return "-"
    return f"{pair[0]:.1f}/{pair[1]:.1f}"


def _fps(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _drops(row: StageRow) -> str:
    items = sorted(((n, r) for r, n in row.drops.items() if n), reverse=True)
    return ", ".join(f"{r} {n}" for n, r in items) or "-"


HEADER = (
    f"{'stage':<12}{'kind':<8}{'fps in':>8}{'fps out':>8}{'stage ms':>13}{'queue ms':>13}"
    f"{'g2g ms':>13}{'misses':>8}  drops (total, by reason)"
)


STREAM_HEADER = f"{'stream':<20}{'fps cap':>8}{'fps out':>8}{'g2g ms':>13}  drops (all stages)"


def format_view(view: LiveView, endpoint: str, window_s: float, status: str) -> str:
    """The table `top` prints: a title line, a header, one line per stage."""
    meta: dict[str, Any] = view.meta
    title = f"medstream top  {meta.get('pipeline') or endpoint}"
    if meta.get("budget_ms"):
        title += f"  budget {meta['budget_ms']:g} ms"
    title += f"  {datetime.now():%H:%M:%S}  p50/p99 over {window_s:g} s"
    if status:
        title += f"  [{status}]"
    lines = [title, HEADER]
    for r in view.rows():
        stage = r.stage if r.incarnations <= 1 else f"{r.stage} x{r.incarnations}"
        lines.append(
            f"{stage:<12.12}{r.kind:<8.8}{_fps(r.fps_in):>8}{_fps(r.fps_out):>8}"
            f"{_ms(r.stage_ms):>13}{_ms(r.queue_ms):>13}{_ms(r.glass_ms):>13}"
            f"{r.misses:>8}  {_drops(r)}"
        )
    if not view.rows():
        lines.append(f"(waiting for stats on {endpoint})")
    streams = view.stream_rows()
    if streams:
        lines += ["", STREAM_HEADER]
        for x in streams:
            drops = sorted(((n, r) for r, n in x.drops.items() if n), reverse=True)
            lines.append(
                f"{x.stream:<20.20}{_fps(x.fps_captured):>8}{_fps(x.fps_delivered):>8}"
                f"{_ms(x.glass_ms):>13}  {', '.join(f'{r} {n}' for n, r in drops) or '-'}"
            )
    return "\n".join(lines)


def _gather(source: Any, view: LiveView, interval_s: float) -> dict[str, Any] | None:
    """Feed every message of the next `interval_s` to the view; the last one, or None."""
    last = None
    end = time.monotonic() + interval_s
    while (left := end - time.monotonic()) > 0:
        msg = source.recv(max(1, int(left * 1000)))
        if msg is None:
            break
        view.update(msg)
        last = msg
        if msg.get("final"):
            break
    return last


def run_top(
    target: str,
    interval_s: float,
    window_s: float,
    count: int,
    collect: bool,
    plain: bool,
    out: TextIO,
) -> int:
    ctx = zmq.Context()
    source, endpoint = open_stats(ctx, target, collect)
    ansi = not plain and out.isatty()
    view = LiveView(window_s)
    refreshes = 0
    try:
        while True:
            msg = _gather(source, view, interval_s)
            final = bool(msg and msg.get("final"))
            status = f"ended: {msg.get('exit') or 'final'}" if final and msg else ""
            text = format_view(view, endpoint, window_s, status)
            out.write((CLEAR + text + "\n") if ansi else (text + "\n\n"))
            out.flush()
            refreshes += 1
            if final or (count and refreshes >= count):
                return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # piped into `head` and the reader left: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0
    finally:
        source.close()
        ctx.term()


def _cmd(args: argparse.Namespace) -> int:
    return run_top(
        args.target, args.interval, args.window, args.count, args.collect, args.plain, sys.stdout
    )


def register(sub: Any) -> None:
    p = sub.add_parser("top", help="live view of every stage (fps, latency, drops, misses)")
    p.add_argument("target", help="pipeline config, or a stats endpoint (tcp://, ipc://)")
    p.add_argument("--interval", type=above_zero, default=1.0, help="seconds between refreshes")
    p.add_argument("--window", type=above_zero, default=5.0, help="seconds the rates/percentiles cover")
    p.add_argument("--count", type=count_or_zero, default=0, help="stop after N refreshes (0: run on)")
    p.add_argument(
        "--collect",
        action="store_true",
        help="bind the stats endpoint and collect the stages' pushes (no supervisor running)",
    )
    p.add_argument("--plain", action="store_true", help="no ANSI refresh, even on a terminal")
    p.set_defaults(func=_cmd)
