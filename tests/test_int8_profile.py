"""tools/int8_profile.py: per-op-type profile tables (structure and counts, never timings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.int8_profile import OpTime, graph_ops, median_profile, op_times, profile, table


def _event(cat: str, name: str, ts: float, dur: float, op: str | None = None) -> dict:
    args = {"op_name": op} if op else {}
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_op_times_skips_warmup_and_divides_by_profiled_runs() -> None:
    events = []
    for run, t0 in enumerate((0.0, 1000.0, 2000.0)):
        # the warm-up run (0) is 100x slower: it must not count
        scale = 100.0 if run == 0 else 1.0
        events += [
            _event("Node", "c1_kernel_time", t0 + 1, 300 * scale, "Conv"),
            _event("Node", "c2_kernel_time", t0 + 2, 100 * scale, "Conv"),
            _event("Node", "q_kernel_time", t0 + 3, 50 * scale, "QuantizeLinear"),
            _event("Node", "q_fence_before", t0 + 3, 7, "QuantizeLinear"),  # not a kernel time
        ]
        events.append(_event("Session", "model_run", t0, 500 * scale))  # logged after its nodes
    rows = op_times(events, skip_runs=1)
    assert [(r.op, r.calls) for r in rows] == [("Conv", 2.0), ("QuantizeLinear", 1.0)]
    assert [r.ms for r in rows] == pytest.approx([0.4, 0.05])
    with pytest.raises(ValueError, match="none left"):
        op_times(events, skip_runs=3)


def _models(tmp: Path) -> tuple[Path, Path]:
    """A one-Conv fp32 model and its Q/DQ twin (activations and weights quantised)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    fp32 = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "fp32",
        [x],
        [y],
        [numpy_helper.from_array(w, "w")],
    )
    scale = np.array(0.02, np.float32)
    inits = [
        numpy_helper.from_array(np.round(w / 0.01).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
        numpy_helper.from_array(scale, "a_s"),
        numpy_helper.from_array(np.array(0, np.uint8) + 128, "a_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "zero"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "a_s", "a_z"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "a_s", "a_z"], ["y"]),
    ]
    int8 = helper.make_graph(nodes, "int8", [x], [y], inits)
    paths = tmp / "fp32.onnx", tmp / "int8.onnx"
    for graph, path in zip((fp32, int8), paths, strict=True):
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return paths


def test_profile_table_on_a_tiny_model(tmp_path: Path) -> None:
    fp32, int8 = _models(tmp_path)
    image = np.random.default_rng(1).normal(0, 1, (1, 2, 16, 16)).astype(np.float32)
    profiles = {
        "fp32": profile(fp32, image, runs=5, warmup=2, threads=1),
        "int8": profile(int8, image, runs=5, warmup=2, threads=1),
    }
    fp32_ops = {r.op: r.calls for r in profiles["fp32"]}
    assert fp32_ops["Conv"] == 1.0  # one node per run (plus ORT's NCHWc layout reorders)
    assert set(fp32_ops) <= {"Conv", "ReorderInput", "ReorderOutput"}
    int8_ops = {r.op: r.calls for r in profiles["int8"]}
    assert "Conv" not in int8_ops  # the Q/DQ pattern runs as an int8 convolution
    assert int8_ops.get("QLinearConv") == 1.0 and int8_ops.get("QuantizeLinear") == 1.0
    assert all(r.ms > 0 for rows in profiles.values() for r in rows)
    text = table(profiles).splitlines()
    assert text[0].startswith("| op type | fp32 calls | fp32 ms | fp32 share | int8 calls")
    rows = {line.split(" | ")[0].strip("| "): line for line in text[2:]}
    assert set(rows) == {*fp32_ops, *int8_ops, "**all nodes**"}
    assert rows["QLinearConv"].split(" | ")[1:4] == ["-", "-", "-"]  # fp32 has no such node
    shares = [float(rows[r.op].split(" | ")[3].rstrip("%")) for r in profiles["fp32"]]
    assert sum(shares) == pytest.approx(100, abs=0.2)
    total_calls = sum(int8_ops.values())
    assert rows["**all nodes**"].split(" | ")[4] == f"{total_calls:g}"


def test_median_profile_ignores_one_loaded_round() -> None:
    rounds = [
        [OpTime("Conv", 2.0, 1.0), OpTime("Relu", 1.0, 0.1)],
        [OpTime("Conv", 2.0, 9.0), OpTime("Relu", 1.0, 0.9)],  # the machine was busy
        [OpTime("Conv", 2.0, 1.2)],  # Relu absent this round: counts as 0
    ]
    assert median_profile(rounds) == [OpTime("Conv", 2.0, 1.2), OpTime("Relu", 1.0, 0.1)]


def test_graph_ops_counts_the_optimised_graph(tmp_path: Path) -> None:
    fp32, int8 = _models(tmp_path)
    assert graph_ops(int8).get("QLinearConv") == 1  # Q/DQ + Conv fused into one int8 node
    assert sum(n for op, n in graph_ops(fp32).items() if op.startswith("Conv")) == 1
