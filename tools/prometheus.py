"""`medstream prometheus`: serve a running pipeline's stats to Prometheus.

    medstream prometheus configs/ultrasound_seg.yaml --port 9464   # then scrape /metrics

Subscribes to the supervisor's stats channel (or, with --collect, gathers the pushes of stages
run alone) and serves the newest snapshot's metrics (`stream.sinks.prometheus`, prometheus_client).
Runs until Ctrl-C, or until the pipeline ends (then it keeps serving the final figures for
`--linger` seconds so a last scrape sees them).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import zmq

from stream.cli import port_number, zero_or_more

from .stats_source import open_stats


def serve(target: str, host: str, port: int, collect: bool, linger_s: float, max_s: float) -> int:
    from stream.sinks.prometheus import MetricsServer  # the prometheus extra (tools/extras.py)

    try:
        server = MetricsServer(host, port)
    except OSError as e:  # a busy port, an address not on this host
        reason = e.strerror or str(e)
        print(
            f"medstream prometheus: cannot listen on {host}:{port}: {reason} "
            "(choose another --port; 0 takes any free one)",
            file=sys.stderr,
        )
        return 2
    ctx = zmq.Context()
    try:
        source, endpoint = open_stats(ctx, target, collect)
    except BaseException:
        server.close()
        ctx.term()
        raise
    print(f"serving http://{host}:{server.port}/metrics from {endpoint}", flush=True)
    t0 = time.monotonic()
    try:
        while not max_s or time.monotonic() - t0 < max_s:
            msg = source.recv(500)
            if msg is None:
                continue
            server.update(msg)
            if msg.get("final"):
                time.sleep(linger_s)
                break
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        source.close()
        ctx.term()
    return 0


def _cmd(args: argparse.Namespace) -> int:
    return serve(args.target, args.host, args.port, args.collect, args.linger, args.max_seconds)


def register(sub: Any) -> None:
    p = sub.add_parser("prometheus", help="serve a pipeline's stats at /metrics for Prometheus")
    p.add_argument("target", help="pipeline config, or a stats endpoint (tcp://, ipc://)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=port_number, default=9464, help="port to listen on (0: any free one)")
    p.add_argument("--collect", action="store_true", help="bind the stats endpoint (no supervisor)")
    p.add_argument(
        "--linger", type=zero_or_more, default=15.0, help="seconds to keep serving after the end"
    )
    p.add_argument("--max-seconds", type=zero_or_more, default=0.0, help="stop after S seconds (0: never)")
    p.set_defaults(func=_cmd)
