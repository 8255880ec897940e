"""int8 that holds on x86 CPUs with and without VNNI (tools/int8_check.py, engines/precision.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from engines.precision import INT16_MAX, max_u8s8_pair_sum
from engines.registry import resolve_model
from tools import int8_check
from tools.machine import describe_flags


def _qdq_conv(path: Path, weight: np.ndarray) -> Path:
    """A one-Conv Q/DQ model whose int8 weight is `weight` (shape O x I x kh x kw)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(weight.astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[1], 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize(("largest", "saturates"), [(64, False), (65, True), (127, True)])
def test_pair_sum_bound_follows_the_largest_weight(
    tmp_path: Path, largest: int, saturates: bool
) -> None:
    w = np.zeros((2, 4, 3, 3), np.int8)
    w[1, 2, 1, 0] = -largest  # the sign does not matter: |w| does
    pair = max_u8s8_pair_sum(_qdq_conv(tmp_path / "m.onnx", w))
    assert pair == 2 * 255 * largest
    assert (pair > INT16_MAX) is saturates


def test_bundled_int8_model_cannot_saturate_without_vnni() -> None:
    """The guard that holds on every CPU: with 7-bit weights no u8 x s8 pair of products can
    pass 16 bits, so AVX2's vpmaddubsw computes what VNNI computes (the old 8-bit model: 64770)."""
    pytest.importorskip("onnx")
    pair = max_u8s8_pair_sum(resolve_model("us-seg-int8").onnx_path)
    assert 0 < pair <= INT16_MAX
    assert max_u8s8_pair_sum(resolve_model("us-seg").onnx_path) == 0  # fp32: no int8 weights


def test_kernel_path_and_flag_description() -> None:
    vnni = {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False}
    avx2 = {"avx2": True, "avx512f": True, "avx512_vnni": False, "avx_vnni": False}
    assert int8_check.kernel_path(vnni).startswith("VNNI")
    assert "saturating" in int8_check.kernel_path(avx2)  # AVX-512 without VNNI saturates too
    assert describe_flags(avx2) == "avx2 avx512f; no avx512_vnni avx_vnni"
    assert describe_flags({"avx2": False}) == "none of avx2"


def test_int8_card_keeps_fields_other_tools_add() -> None:
    from tools.quantize import int8_card

    fp32 = dict(resolve_model("us-seg").card.raw)
    fp32["applicability"] = {"method": "m", "threshold": 0.5}
    fp32["notice"] = "Research use only"
    card = int8_card(fp32, "us-seg", "us-seg-int8", "calib", "cmd")
    assert card["applicability"] == {"method": "m", "threshold": 0.5}
    assert card["notice"] == "Research use only"
    assert card["precision"] == "int8" and card["name"] == "us-seg-int8"
    assert "metrics" not in card and "torchscript" not in card and "cost" not in card
    assert "reduce_range" in card["quantization"]["weights"]


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_emulated_avx2_cpu() -> None:
    """ONNX Runtime's AVX2 (no VNNI) kernels, reached on any x86-64 host by qemu-x86_64 -cpu
    Haswell: the int8 model must agree with fp32 there as it does on VNNI CPUs."""
    problem = int8_check.emulation_problem()
    if problem:
        pytest.skip(f"AVX2 emulation: {problem}")
    args = argparse.Namespace(
        model="us-seg-int8", fp32="us-seg", seeds=[2000, 2003], frames_per_seed=1
    )
    row = int8_check.emulated(args, timeout_s=280)
    assert row.cpu.startswith("emulated Haswell") and "saturating" in row.kernel
    assert row.frames == 2
    assert row.agreement >= int8_check.MIN_AGREEMENT
    assert row.on_boundary >= int8_check.MIN_ON_BOUNDARY
