"""The profiler's PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .analysis import StageInfo, components
from .records import FrameTable


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_over_time(
    table: FrameTable, stages: list[StageInfo], budget_ms: float, path: Path
) -> None:
    """Each stage's time per frame and glass-to-glass, against time since the first capture."""
    plt = _pyplot()
    frames = [f for f in table.ordered() if not f.warmup]
    t0 = frames[0].capture_ns if frames else 0
    fig, (ax_g, ax_s) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    delivered = [f for f in frames if f.delivered]
    ax_g.plot(
        [(f.capture_ns - t0) / 1e9 for f in delivered],
        [f.glass_ms for f in delivered],
        ".-",
        ms=3,
        lw=0.6,
        label="glass-to-glass",
    )
    ax_g.axhline(budget_ms, color="crimson", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    misses = [f for f in delivered if f.budget_miss]
    if misses:
        ax_g.plot(
            [(f.capture_ns - t0) / 1e9 for f in misses],
            [f.glass_ms for f in misses],
            "rx",
            label="budget miss",
        )
    ax_g.set_ylabel("ms")
    ax_g.legend(loc="upper right", fontsize=8)
    ax_g.set_title("glass-to-glass per delivered frame")
    for s in stages:
        pts = [(f.capture_ns, f.visits[s.id]) for f in frames if s.id in f.visits]
        pts = [(t, v) for t, v in pts if v.timed]
        if pts:
            ax_s.plot(
                [(t - t0) / 1e9 for t, _ in pts], [v.ms for _, v in pts], ".", ms=2, label=s.id
            )
    ax_s.set_ylabel("stage ms")
    ax_s.set_xlabel("seconds since the first profiled capture")
    ax_s.legend(loc="upper right", fontsize=8)
    ax_s.set_title("time each stage spent per frame")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def glass_histogram_cdf(
    table: FrameTable, summary: dict[str, Any], budget_ms: float, path: Path
) -> None:
    """Histogram and CDF of glass-to-glass, with p50/p99 and the budget marked."""
    plt = _pyplot()
    g = np.array([f.glass_ms for f in table.ordered() if not f.warmup and f.delivered], dtype=float)
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    if g.size:
        ax_h.hist(g, bins=min(80, max(10, g.size // 10)), color="steelblue")
        xs = np.sort(g)
        ax_c.plot(xs, np.arange(1, xs.size + 1) / xs.size, lw=1.2)
    e2e = summary["end_to_end"]
    for ax in (ax_h, ax_c):
        ax.axvline(budget_ms, color="crimson", ls="--", lw=1, label=f"budget {budget_ms:g}")
        for key, color in (("p50", "green"), ("p99", "orange")):
            if e2e.get(key) is not None:
                ax.axvline(e2e[key], color=color, lw=1, label=f"{key} {e2e[key]:.1f}")
        ax.set_xlabel("glass-to-glass ms")
        ax.legend(fontsize=8)
    ax_h.set_ylabel("frames")
    ax_h.set_title("histogram")
    ax_c.set_ylabel("fraction of frames <= x")
    ax_c.set_title("CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def time_breakdown(table: FrameTable, summary: dict[str, Any], path: Path) -> None:
    """Stacked bars: where glass-to-glass goes (stages and links), for the mean, the median
    frame and the frames at or above p99."""
    plt = _pyplot()
    bd = summary["breakdown_ms"]
    names: list[str] = []
    for f in table.ordered():  # the path order of a delivered frame
        if f.delivered and not f.warmup:
            names = [n for n, _ in components(f)]
            break
    for group in bd.values():
        names += [n for n in group if n not in names]
    bars = [
        ("mean", bd["mean"]),
        ("median frame", bd["median_frame"]),
        ("frames >= p99", bd["tail_frames"]),
    ]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    cmap = plt.get_cmap("tab20")
    for row, (_label, group) in enumerate(bars):
        left = 0.0
        for i, n in enumerate(names):
            w = float(group.get(n, 0.0))
            ax.barh(
                row,
                w,
                left=left,
                color=cmap(i % 20),
                label=n if row == 0 else None,
                edgecolor="white",
            )
            if w > 1.5:
                ax.text(left + w / 2, row, f"{w:.1f}", ha="center", va="center", fontsize=7)
            left += w
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel("ms (stages and links along the path; they add up to glass-to-glass)")
    ax.legend(
        ncol=min(6, max(1, len(names))), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28)
    )
    ax.set_title("where the time goes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = {
    "latency_over_time.png": "latency over time, per stage and glass-to-glass",
    "glass_to_glass.png": "glass-to-glass histogram and CDF",
    "time_breakdown.png": "where the time goes, per stage and link",
}


def write_plots(
    table: FrameTable, stages: list[StageInfo], summary: dict[str, Any], budget_ms: float, out: Path
) -> None:
    latency_over_time(table, stages, budget_ms, out / "latency_over_time.png")
    glass_histogram_cdf(table, summary, budget_ms, out / "glass_to_glass.png")
    time_breakdown(table, summary, out / "time_breakdown.png")
