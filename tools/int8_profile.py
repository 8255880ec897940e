"""Where us-seg's time goes in fp32 and int8: ONNX Runtime's profiler, per node type.

    python -m tools.int8_profile                          # us-seg vs us-seg-int8, 1 thread
    python -m tools.int8_profile --runs 500 --json out/int8_profile.json

Each model runs in an ONNX Runtime session with profiling on (SessionOptions.enable_profiling),
the engines' settings (one intra-op thread, sequential, graph optimisation `all`, so the
session runs the nodes ONNX Runtime made of the file: fused Conv, QLinearConv ...). After a
warm-up (not profiled: profiling starts with the session, so the warm-up events are dropped
by the model run they fall in), the kernel time of every node event is summed by its op type
and divided by the number of profiled runs: milliseconds per frame per op type, calls per frame, and share.
The input is one phantom frame, preprocessed as the engine does (resize, normalise).
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.preprocess import preprocess
from engines.registry import ModelInput

MODELS = ("us-seg", "us-seg-int8")


@dataclass(frozen=True)
class OpTime:
    """One op type's share of a run: calls and kernel milliseconds per run."""

    op: str
    calls: float
    ms: float


def run_starts(events: Iterable[Mapping[str, object]]) -> list[float]:
    """Start times (us) of the profiled model runs (Session events "model_run"), sorted."""
    return sorted(
        float(str(e.get("ts", 0)))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )


def op_times(events: Sequence[Mapping[str, object]], skip_runs: int = 0) -> list[OpTime]:
    """Sum ONNX Runtime profile events of category Node ("*_kernel_time") by op type.

    Each node event belongs to the model run that started last before it; events of the first
    `skip_runs` runs (the warm-up) are left out, and the sums are divided by the number of runs
    that remain. Sorted by time, largest first.
    """
    starts = run_starts(events)
    runs = len(starts) - skip_runs
    if runs <= 0:
        raise ValueError(f"profile has {len(starts)} model runs, {skip_runs} to skip: none left")
    totals: dict[str, list[float]] = {}
    for e in events:
        name = str(e.get("name", ""))
        args = e.get("args")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not isinstance(args, Mapping):
            continue
        if bisect.bisect_right(starts, float(str(e.get("ts", 0)))) - 1 < skip_runs:
            continue
        entry = totals.setdefault(str(args.get("op_name", "?")), [0.0, 0.0])
        entry[0] += 1
        entry[1] += float(str(e.get("dur", 0))) / 1e3
    rows = [OpTime(op, calls / runs, ms / runs) for op, (calls, ms) in totals.items()]
    return sorted(rows, key=lambda r: -r.ms)


def profile(
    model_path: Path, image: np.ndarray, runs: int, warmup: int, threads: int
) -> list[OpTime]:
    """Run `model_path` warmup + runs times with profiling on; per-op-type time per run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return op_times(events, skip_runs=warmup)


def table(profiles: Mapping[str, list[OpTime]]) -> str:
    """Markdown: one row per op type, per model calls / ms per frame / share of the node time."""
    names = list(profiles)
    ops = sorted(
        {r.op for rows in profiles.values() for r in rows},
        key=lambda op: -max(r.ms for rows in profiles.values() for r in rows if r.op == op),
    )
    head = "| op type | " + " | ".join(f"{n} calls | {n} ms | {n} share" for n in names) + " |"
    lines = [head, "|---|" + "---|---|---|" * len(names)]
    totals = {n: sum(r.ms for r in rows) for n, rows in profiles.items()}
    for op in ops:
        cells = []
        for n in names:
            r = next((r for r in profiles[n] if r.op == op), None)
            if r is None:
                cells.append("- | - | -")
            else:
                share = 100 * r.ms / totals[n] if totals[n] else 0.0
                cells.append(f"{r.calls:g} | {r.ms:.3f} | {share:.1f}%")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    total_cells = " | ".join(
        f"{sum(r.calls for r in profiles[n]):g} | {totals[n]:.3f} | 100%" for n in names
    )
    lines.append(f"| **all nodes** | {total_cells} |")
    return "\n".join(lines)


def model_input(card_input: ModelInput) -> np.ndarray:
    """One held-out phantom frame as the engine feeds it (1 x C x H x W)."""
    from stream.sources.phantom import PhantomSpec, phantom_frame

    frame = phantom_frame(PhantomSpec(seed=3000), 0).image
    return preprocess(frame, "gray8", card_input)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="bundled model names")
    p.add_argument("--runs", type=int, default=300, help="profiled runs per model")
    p.add_argument("--warmup", type=int, default=30, help="runs before profiling counts")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", type=Path, default=None, help="also write the per-op times here")
    args = p.parse_args(argv)
    from engines.registry import ModelError, resolve_model
    from tools.machine import cpu_description

    profiles: dict[str, list[OpTime]] = {}
    for name in args.models.split(","):
        try:
            ref = resolve_model(name)
        except ModelError as e:
            print(f"int8_profile: {e}", file=sys.stderr)
            return 2
        image = model_input(ref.card.input)
        profiles[name] = profile(ref.onnx_path, image, args.runs, args.warmup, args.threads)
    print(
        f"ONNX Runtime profiler, {args.runs} runs after {args.warmup} warm-up, "
        f"{args.threads} thread(s), {cpu_description()}; ms per frame (kernel time)"
    )
    print(table(profiles))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {n: [r.__dict__ for r in rows] for n, rows in profiles.items()}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
