"""Check a stats snapshot from the stats channel before the supervisor keeps it.

Snapshots come over a socket, so they are input like any other: the supervisor must never
crash on one, and the run report must never be built from a malformed one. `check_snapshot`
returns the snapshot, or raises `ValueError` saying what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from .histogram import Histogram

MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
MAX_KEYS = 4096  # counters, drops or histograms per snapshot
MAX_LABELS = 256  # side of a confusion matrix
INT64 = 2**63 - 1
MAX_STREAMS = 65  # stream ids a stage counts apart (stream.stats.MAX_STREAMS) + "_other"


def _count_map(value: Any, what: str) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > MAX_KEYS:
        raise ValueError(f"{what} must be a mapping of up to {MAX_KEYS} names")
    for k, v in value.items():
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= INT64:
            raise ValueError(f"{what}.{k!s:.40} must be a count")
    return value


def _optional_ns(value: Any, what: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{what} must be an integer or null")


def _check_info(info: Any) -> None:
    if not isinstance(info, dict):
        raise ValueError("info must be a mapping")
    confusion = info.get("confusion")
    if confusion is not None:
        ok = isinstance(confusion, list) and len(confusion) <= MAX_LABELS
        ok = ok and all(
            isinstance(row, list)
            and len(row) == len(confusion)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row)
            for row in confusion
        )
        if not ok:
            raise ValueError("info.confusion must be a square matrix of counts")
    labels = info.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError("info.labels must be a list of strings")
    seq_high = info.get("seq_high", {})
    if not isinstance(seq_high, dict) or len(seq_high) > MAX_KEYS:
        raise ValueError("info.seq_high must be a mapping")
    for v in seq_high.values():
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= INT64:
            raise ValueError("info.seq_high values must be sequence numbers")
    arrived = info.get("arrived", {})
    if not isinstance(arrived, dict) or len(arrived) > MAX_KEYS:
        raise ValueError("info.arrived must be a mapping")
    for v in arrived.values():
        if not (
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= INT64 for x in v)
        ):
            raise ValueError("info.arrived values must be [frames, lowest seq, highest seq]")
    sink_drops = info.get("sink_drops", {})
    if not isinstance(sink_drops, dict) or len(sink_drops) > MAX_KEYS:
        raise ValueError("info.sink_drops must be a mapping")
    for name, drops in sink_drops.items():
        _count_map(drops, f"info.sink_drops.{name!s:.40}")
    epoch = info.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise ValueError("info.epoch must be an integer")
    if not isinstance(info.get("stream", ""), str):
        raise ValueError("info.stream must be a string")


def _check_hists(hists: Any, what: str) -> None:
    if not isinstance(hists, dict) or len(hists) > MAX_KEYS:
        raise ValueError(f"{what} must be a mapping")
    for name, d in hists.items():
        try:
            Histogram.from_dict(d)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            raise ValueError(f"{what}.{name!s:.40}: {e}") from None


def _check_streams(streams: Any) -> None:
    """Per-stream figures: stream id -> {counters, drops, hists}."""
    if not isinstance(streams, dict) or len(streams) > MAX_STREAMS:
        raise ValueError(f"streams must be a mapping of up to {MAX_STREAMS} stream ids")
    for sid, figures in streams.items():
        what = f"streams.{sid!s:.40}"
        if not isinstance(figures, dict):
            raise ValueError(f"{what} must be a mapping")
        _count_map(figures.get("counters", {}), f"{what}.counters")
        _count_map(figures.get("drops", {}), f"{what}.drops")
        _check_hists(figures.get("hists", {}), f"{what}.hists")


def check_snapshot(snap: Any, stage_ids: set[str]) -> dict[str, Any]:
    """Validate one decoded snapshot of a stage in `stage_ids`; ValueError if it is not one."""
    if not isinstance(snap, dict):
        raise ValueError("not a JSON object")
    stage = snap.get("stage")
    if not isinstance(stage, str) or stage not in stage_ids:
        raise ValueError(f"unknown stage {stage!r:.40}")
    for key in ("pid", "started_ns"):
        v = snap.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{key} must be a non-negative integer")
    if not isinstance(snap.get("final", False), bool):
        raise ValueError("final must be true or false")
    _count_map(snap.get("counters", {}), "counters")
    _count_map(snap.get("drops", {}), "drops")
    _check_hists(snap.get("hists", {}), "hists")
    _check_streams(snap.get("streams", {}))
    _check_info(snap.get("info", {}))
    cpu = snap.get("cpu_s", 0.0)
    if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not 0 <= cpu < 1e9:
        raise ValueError("cpu_s must be a number of seconds >= 0")
    _optional_ns(snap.get("first_out_ns"), "first_out_ns")
    _optional_ns(snap.get("last_out_ns"), "last_out_ns")
    return snap


def parse_snapshot(body: bytes, stage_ids: set[str]) -> dict[str, Any]:
    """Decode and check one stats message; ValueError if it is not a valid snapshot."""
    if len(body) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"{len(body)} bytes > {MAX_SNAPSHOT_BYTES}")
    try:
        snap = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {type(e).__name__}") from None
    return check_snapshot(snap, stage_ids)
