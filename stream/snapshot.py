"""Check a stats snapshot from the stats channel before the supervisor keeps it.

Snapshots come over a socket, so they are input like any other: the supervisor must never
crash on one, and the run report must never be built from a malformed one. `check_snapshot`
returns the snapshot, or raises `ValueError` saying what is wrong.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from engines.schema import typed

from .histogram import Histogram

MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
MAX_KEYS = 4096  # counters, drops or histograms per snapshot
MAX_LABELS = 256  # side of a confusion matrix
INT64 = 2**63 - 1
MAX_STREAMS = 65  # stream ids a stage counts apart (stream.stats.MAX_STREAMS) + "_other"

Count = Annotated[int, Meta(ge=0, le=INT64)]
Counts = Annotated[dict[str, Count], Meta(max_length=MAX_KEYS)]


class Info(msgspec.Struct):
    """The parts of a snapshot's `info` the report reads (stages may add others)."""

    confusion: Annotated[list[list[Annotated[int, Meta(ge=0)]]], Meta(max_length=MAX_LABELS)] | None = None
    labels: list[str] = []
    seq_high: Counts = {}
    arrived: Annotated[dict[str, tuple[Count, Count, Count]], Meta(max_length=MAX_KEYS)] = {}
    sink_drops: Annotated[dict[str, Counts], Meta(max_length=MAX_KEYS)] = {}
    epoch: int = 0
    stream: str = ""

    def __post_init__(self) -> None:
        if self.confusion is not None and any(len(r) != len(self.confusion) for r in self.confusion):
            raise ValueError("confusion must be a square matrix of counts")


class StreamFigures(msgspec.Struct):
    """One stream's counters, drops and histograms within a stage's snapshot."""

    counters: Counts = {}
    drops: Counts = {}
    hists: Annotated[dict[str, dict[str, Any]], Meta(max_length=MAX_KEYS)] = {}


class Snapshot(msgspec.Struct):
    """One `StageStats.snapshot()` as checked before it is kept (the dict itself is kept)."""

    stage: str
    pid: Annotated[int, Meta(ge=0)]
    started_ns: Annotated[int, Meta(ge=0)]
    final: bool = False
    counters: Counts = {}
    drops: Counts = {}
    hists: Annotated[dict[str, dict[str, Any]], Meta(max_length=MAX_KEYS)] = {}
    info: Info = msgspec.field(default_factory=Info)
    streams: Annotated[dict[str, StreamFigures], Meta(max_length=MAX_STREAMS)] = {}
    cpu_s: Annotated[float, Meta(ge=0, lt=1e9)] = 0.0
    first_out_ns: int | None = None
    last_out_ns: int | None = None


class Published(Snapshot, kw_only=True):
    """A snapshot as the stats channel carries it: stamped with the stage's clock."""

    now_ns: int


def _check_hists(hists: dict[str, dict[str, Any]], what: str) -> None:
    for name, d in hists.items():
        try:
            Histogram.from_dict(d)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            raise ValueError(f"{what}.{name!s:.40}: {e}") from None


def check_snapshot(snap: Any, stage_ids: set[str]) -> dict[str, Any]:
    """Validate one decoded snapshot of a stage in `stage_ids`; ValueError if it is not one."""
    checked = typed(snap, Snapshot, "", ValueError)
    if checked.stage not in stage_ids:
        raise ValueError(f"unknown stage {checked.stage!r:.40}")
    _check_hists(checked.hists, "hists")
    for sid, figures in checked.streams.items():
        _check_hists(figures.hists, f"streams.{sid!s:.40}.hists")
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
