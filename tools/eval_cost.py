"""`medstream evaluate`'s cost columns and its accuracy-against-time PNG (the Pareto front).

Parameters and GFLOPs of a row are those of its networks (a chain's are summed; classical
methods add none and a row of classical methods only shows "-"). Parameters: the card's
`architecture.parameters` where it has one, else the ONNX file's weight elements (float and
int8 initialisers). GFLOPs: tools/onnx_flops.py at the network's input size, batch 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from engines.registry import resolve_model
from tools.eval_common import write_png
from tools.onnx_flops import count_flops

WEIGHT_TYPES = (1, 3, 10, 16)  # ONNX TensorProto FLOAT, INT8, FLOAT16, BFLOAT16


def _parameters(name: str) -> int:
    ref = resolve_model(name)
    arch = ref.card.raw.get("architecture")
    if isinstance(arch, dict) and isinstance(arch.get("parameters"), int):
        return int(arch["parameters"])
    import onnx

    graph = onnx.load(str(ref.onnx_path)).graph
    return sum(
        int(np.prod(i.dims)) for i in graph.initializer if i.data_type in WEIGHT_TYPES and i.dims
    )


def network_cost(models: Iterable[str | None]) -> dict[str, float | int]:
    """{"parameters", "gflops"} summed over the networks among `models` ({} if none)."""
    chained = [n for m in models if m is not None for n in m.split("+")]  # a chain: each model
    names = [n for n in chained if not n.startswith("classical-")]
    if not names:
        return {}
    return {
        "parameters": sum(_parameters(n) for n in names),
        "gflops": round(sum(count_flops(resolve_model(n).onnx_path).gflops for n in names), 4),
    }


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (ms, accuracy) points: True where no other point is as fast and as accurate and
    strictly better in one of the two."""
    front = []
    for i, (ms, acc) in enumerate(points):
        dominated = any(
            m <= ms and a >= acc and (m < ms or a > acc)
            for j, (m, a) in enumerate(points)
            if j != i
        )
        front.append(not dominated)
    return front


def mark_pareto(rows: list[dict]) -> None:
    """Set `pareto` on every row with an accuracy and a time (True: on the front)."""
    timed = [r for r in rows if "pixel_accuracy" in r and "median_ms" in r]
    flags = pareto_front([(r["median_ms"], r["pixel_accuracy"]) for r in timed])
    for r, on in zip(timed, flags, strict=True):
        r["pareto"] = on


def plot_pareto(rows: list[dict], path: Path, title: str) -> str | None:
    """Pixel accuracy against median ms per row, the front joined; None, or why skipped."""
    timed = [r for r in rows if "pareto" in r]
    front = sorted((r for r in timed if r["pareto"]), key=lambda r: r["median_ms"])

    def draw(ax: Any) -> None:
        for i, g in enumerate(sorted({r["group"] for r in timed})):
            pts = [r for r in timed if r["group"] == g]
            ax.scatter(
                [r["median_ms"] for r in pts],
                [100 * r["pixel_accuracy"] for r in pts],
                color=f"C{i}",
                label=g,
                zorder=3,
            )
        ax.step(
            [r["median_ms"] for r in front],
            [100 * r["pixel_accuracy"] for r in front],
            where="post",
            color="black",
            lw=0.8,
            ls="--",
            label="Pareto front",
        )
        for i, r in enumerate(front):  # the front named (the rest are in the table): alternating
            ax.annotate(  # above and below the step line, so neighbours do not overlap
                r["methods"],
                (r["median_ms"], 100 * r["pixel_accuracy"]),
                textcoords="offset points",
                xytext=(5, 6 if i % 2 == 0 else -11),
                fontsize=7,
            )
        ax.set_xscale("log")
        ax.set_xlabel("median ms per frame (log scale)")
        ax.set_ylabel("pixel accuracy in the field of view (%)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)

    return write_png(path, (7.0, 4.2), draw)
