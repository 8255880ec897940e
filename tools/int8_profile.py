"""Where us-seg's time goes in fp32 and int8: ONNX Runtime's profiler, per node type.

    python -m tools.int8_profile                          # us-seg vs us-seg-int8, 1 thread
    python -m tools.int8_profile --rounds 9 --json out/int8_profile.json

Each model runs in an ONNX Runtime session with profiling on (SessionOptions.enable_profiling)
and the engines' settings (one intra-op thread, sequential, graph optimisation `all`), so the
profile shows the nodes ONNX Runtime made of the file (fused Conv, QLinearConv ...). In each
of `--rounds` rounds, the models alternating, `--warmup` runs come first (dropped from the
profile by the model run their events fall in), then the kernel time of every node event of
`--runs` runs is summed by op type and divided by the runs. The table gives per op type the
calls and the median over rounds of the milliseconds per frame, and its share, so a burst of
load on a shared machine does not decide it. The input is one held-out phantom frame,
preprocessed as the engine does (resize, normalise). Last, the optimised graphs' node counts.
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
import onnxruntime as ort

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
    options = _session_options(threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return op_times(events, skip_runs=warmup)


def median_profile(rounds: list[list[OpTime]]) -> list[OpTime]:
    """Per op type, the median over rounds of its ms per run (calls: the median too)."""
    ops = {r.op for rows in rounds for r in rows}
    out = []
    for op in ops:
        found = [next((r for r in rows if r.op == op), OpTime(op, 0.0, 0.0)) for rows in rounds]
        out.append(
            OpTime(
                op,
                float(np.median([r.calls for r in found])),
                float(np.median([r.ms for r in found])),
            )
        )
    return sorted(out, key=lambda r: -r.ms)


def _session_options(threads: int) -> ort.SessionOptions:
    """The engines' settings (engines/onnxrt.py): one thread, sequential, optimisation `all`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def graph_ops(model_path: Path, threads: int = 1) -> dict[str, int]:
    """Node counts of the graph ONNX Runtime runs (after its optimisation), by op type, with
    " depthwise" for a grouped convolution and " +Relu" etc. for a fused activation."""
    import onnx

    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        options = _session_options(threads)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        key = node.op_type
        if "group" in attrs and attrs["group"].i > 1:
            key += " depthwise"
        if "activation" in attrs:
            key += " +" + attrs["activation"].s.decode()
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
    p.add_argument("--runs", type=int, default=100, help="profiled runs per model and round")
    p.add_argument(
        "--rounds", type=int, default=5, help="rounds, models alternating; per op the median"
    )
    p.add_argument("--warmup", type=int, default=30, help="runs before profiling counts")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", type=Path, default=None, help="also write the per-op times here")
    args = p.parse_args(argv)
    from engines.registry import ModelError, resolve_model
    from tools.machine import cpu_description

    try:
        refs = [resolve_model(name) for name in args.models.split(",")]
    except ModelError as e:
        print(f"int8_profile: {e}", file=sys.stderr)
        return 2
    if args.runs < 1 or args.rounds < 1 or args.warmup < 0:
        print("int8_profile: --runs and --rounds must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    rounds: dict[str, list[list[OpTime]]] = {ref.model_id: [] for ref in refs}
    for _ in range(args.rounds):  # alternate, so a burst of load on the machine hits both
        for ref in refs:
            image = model_input(ref.card.input)
            rounds[ref.model_id].append(
                profile(ref.onnx_path, image, args.runs, args.warmup, args.threads)
            )
    profiles = {name: median_profile(r) for name, r in rounds.items()}
    print(
        f"ONNX Runtime profiler, {args.rounds} rounds of {args.runs} runs after {args.warmup} "
        f"warm-up, {args.threads} thread(s), {cpu_description()}; kernel ms per frame, "
        "per op type the median over rounds"
    )
    print(table(profiles))
    print()
    try:
        import onnx  # noqa: F401  (graph_ops reads the optimised graph with it)
    except ImportError:
        print("node counts skipped: onnx is not installed (pip install 'medstream[train]')")
    else:
        print("nodes ONNX Runtime runs (after graph optimisation):")
        for name in profiles:
            ops = graph_ops(resolve_model(name).onnx_path, args.threads)
            print(f"- {name}: " + ", ".join(f"{op} x{n}" for op, n in ops.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {n: [r.__dict__ for r in rows] for n, rows in profiles.items()}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
