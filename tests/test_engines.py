"""Backends on the CPU: PyTorch vs ONNX Runtime, classical methods, chains, cache keys, fp16."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engines import EngineSpec, EngineUnavailable, list_models, load_pipeline
from engines.backends import select_backend
from engines.classical import list_classical
from engines.engine_cache import EngineCache, EngineKeyParts, engine_cache_key
from engines.onnxrt import OnnxRuntimeEngine, default_providers
from engines.preprocess import preprocess
from engines.registry import ModelError, resolve_model
from stream.sources.phantom import LABELS, phantom_frame
from tools.eval_seg import evaluate, phantom_set, spec_for_seed

TORCH_TOLERANCE = 1e-4  # max |PyTorch - ONNX Runtime| on raw outputs (logits, image / 255)


def _frame(seed: int = 5100, index: int = 3) -> np.ndarray:
    return phantom_frame(spec_for_seed(seed), index).image


# --- PyTorch backend ---------------------------------------------------------------------


def _with_torchscript() -> list[str]:
    return [m for m in list_models() if resolve_model(m).torchscript_path is not None]


def test_every_float_model_ships_torchscript() -> None:
    """Each bundled fp32 network has a PyTorch artefact; int8 (Q/DQ) variants are ORT/TRT only."""
    for name in list_models():
        card = resolve_model(name).card
        if card.precision == "fp32":
            assert name in _with_torchscript(), name


@pytest.mark.parametrize("model", _with_torchscript())
def test_pytorch_matches_onnxruntime(model: str) -> None:
    pytest.importorskip("torch", reason="needs the train extra: pip install -e '.[train]'")
    from engines.torch_engine import TorchEngine

    ref = resolve_model(model)
    card = ref.card
    image = _frame()
    if card.input.channels != "gray":
        image = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    fmt = "gray8" if image.ndim == 2 else "bgr8"
    x = preprocess(image, fmt, card.input)
    ort_out = OnnxRuntimeEngine(ref.onnx_path).run({card.input.name: x})[card.output]
    torch_out = TorchEngine(ref).run({card.input.name: x})[card.output]
    assert ort_out.shape == torch_out.shape
    np.testing.assert_allclose(torch_out, ort_out, rtol=0, atol=TORCH_TOLERANCE)
    a = load_pipeline(EngineSpec(model=model, backend="onnxruntime"))
    b = load_pipeline(EngineSpec(model=model, backend="pytorch"))
    assert (b.backend, b.device, b.precision) == ("pytorch", "cpu", "fp32")
    ra, rb = a(image, fmt), b(image, fmt)
    if card.task == "segmentation":
        assert np.mean(ra.mask == rb.mask) > 0.9999
    elif card.task == "detection":  # the same boxes, labels and scores from either backend
        assert [b.label for b in ra.boxes] == [b.label for b in rb.boxes]
        got = [[b.x0, b.y0, b.x1, b.y1, b.score] for b in rb.boxes]
        want = [[b.x0, b.y0, b.x1, b.y1, b.score] for b in ra.boxes]
        np.testing.assert_allclose(got, want, atol=1e-2)
    else:
        assert np.abs(ra.image.astype(int) - rb.image.astype(int)).max() <= 1
    a.close()
    b.close()


def test_pytorch_without_torchscript(tmp_path: Path) -> None:
    folder = resolve_model("us-seg").onnx_path.parent
    card = json.loads((folder / "card.json").read_text())
    del card["torchscript"]
    (tmp_path / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="ships no TorchScript file"):
        load_pipeline(EngineSpec(model=str(tmp_path / "model.onnx"), backend="pytorch"))


# --- classical ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["classical-median", "classical-bilateral", "classical-nlm"])
def test_classical_denoisers(name: str) -> None:
    f = phantom_frame(spec_for_seed(5101), 0)
    p = load_pipeline(EngineSpec(model=name))
    assert (p.backend, p.task, p.device) == ("classical", "denoising", "cpu")
    out = p(f.image, "gray8")
    assert out.mask is None and out.image.shape == f.image.shape and out.image.dtype == np.uint8
    err_in = np.mean((f.image.astype(float) - f.clean) ** 2)
    err_out = np.mean((out.image.astype(float) - f.clean) ** 2)
    assert err_out < 0.7 * err_in  # speckle really is reduced
    bgr = np.ascontiguousarray(np.repeat(f.image[:, :, None], 3, axis=2))
    assert p(bgr, "bgr8").image.shape == bgr.shape


def test_classical_otsu_segments_ultrasound() -> None:
    p = load_pipeline(EngineSpec(model="classical-otsu", backend="classical"))
    assert p.labels == LABELS and p.task == "segmentation"
    result = evaluate(p, phantom_set(range(5200, 5204), 1))
    assert result["pixel_accuracy_fov"] > 0.83, result  # all-background would score ~0.80
    assert result["dice"]["anechoic"] > 0.4 and result["dice"]["interface"] > 0.5, result


def test_guided_filter_refines_a_network_denoiser() -> None:
    """classical-guided after us-denoise: closer to the clean frame than us-denoise alone."""
    f = phantom_frame(spec_for_seed(5101), 0)
    net = load_pipeline(EngineSpec(model="us-denoise", backend="onnxruntime"))
    both = load_pipeline(EngineSpec(model="us-denoise+classical-guided"))
    a, b = net(f.image, "gray8").image, both(f.image, "gray8").image
    assert a is not None and b is not None and b.shape == f.image.shape and b.dtype == np.uint8
    err_net = np.mean((a.astype(float) - f.clean) ** 2)
    err_both = np.mean((b.astype(float) - f.clean) ** 2)
    assert err_both < 0.95 * err_net, (err_net, err_both)
    flat = np.full((40, 60, 3), 77, np.uint8)  # a flat colour frame stays flat
    guided = load_pipeline(EngineSpec(model="classical-guided"))
    assert np.array_equal(guided(flat, "bgr8").image, flat)
    net.close()
    both.close()


def test_classical_names_and_errors() -> None:
    assert set(list_classical()) == {
        "classical-median",
        "classical-bilateral",
        "classical-nlm",
        "classical-guided",
        "classical-otsu",
        "classical-instruments",
    }
    with pytest.raises(ModelError, match="unknown classical method 'classical-foo'"):
        load_pipeline(EngineSpec(model="classical-foo"))
    with pytest.raises(ValueError, match="use backend auto or classical"):
        load_pipeline(EngineSpec(model="classical-otsu", backend="onnxruntime"))
    with pytest.raises(ValueError, match="needs a colour frame"):
        load_pipeline(EngineSpec(model="classical-instruments"))(_frame(), "gray8")


# --- chains ------------------------------------------------------------------------------


def test_chain_denoiser_then_segmenter() -> None:
    p = load_pipeline(EngineSpec(model="classical-median+us-seg"))
    assert p.model_id == "classical-median+us-seg" and p.task == "segmentation"
    assert p.backend == "classical+onnxruntime" and p.labels == LABELS
    r = p(_frame(), "gray8")
    assert r.mask is not None and r.image is not None and r.mask.shape == r.image.shape
    assert any(k.startswith("0:classical-median/") for k in r.timings_ms)
    assert any(k.startswith("1:us-seg/") for k in r.timings_ms)
    p.close()
    with pytest.raises(ModelError, match="only denoisers can feed another model"):
        load_pipeline(EngineSpec(model="us-seg+classical-median"))
    with pytest.raises(ModelError, match="empty name"):
        load_pipeline(EngineSpec(model="us-seg+"))


# --- backend choice ----------------------------------------------------------------------


def test_auto_picks_onnxruntime_here_and_says_why() -> None:
    sel = select_backend("auto", "us-seg")
    assert sel.backend == "onnxruntime"
    assert sel.reason.startswith("auto: TensorRT not usable (no module named")
    assert default_providers() == ("CPUExecutionProvider",)
    assert select_backend("auto", "classical-nlm").backend == "classical"
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        select_backend("tpu", "us-seg")


def test_unknown_execution_provider() -> None:
    with pytest.raises(ValueError, match="'NoSuchExecutionProvider' is not in this ONNX Runtime"):
        load_pipeline(EngineSpec(providers=["NoSuchExecutionProvider"]))


# --- TensorRT engine cache (no GPU needed) -------------------------------------------------


BASE = EngineKeyParts("a" * 64, "NVIDIA H100 80GB HBM3", (9, 0), "10.13.0.35", "fp16")


def test_cache_key_changes_with_every_part() -> None:
    key = engine_cache_key(BASE)
    assert key == engine_cache_key(dataclasses.replace(BASE))  # a pure function
    assert key.startswith("nvidia-h100-80gb-hbm3-sm90-trt10.13.0.35-fp16-")
    changes = {
        "model_sha256": "b" * 64,
        "gpu_name": "NVIDIA L4",
        "compute_capability": (8, 9),
        "tensorrt_version": "11.4.0.106",
        "precision": "int8",
    }
    keys = {engine_cache_key(dataclasses.replace(BASE, **{k: v})) for k, v in changes.items()}
    assert len(keys) == len(changes) and key not in keys
    assert engine_cache_key(dataclasses.replace(BASE, compute_capability=(9, 1))) != key


def test_engine_cache_store_and_load(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    key = engine_cache_key(BASE)
    assert cache.load(key) is None
    path = cache.store(key, b"plan-bytes", BASE, {"build_seconds": 1.5})
    assert path.read_bytes() == b"plan-bytes" and cache.load(key) == b"plan-bytes"
    (entry,) = cache.entries()
    assert (
        entry["key"] == key and entry["gpu_name"] == BASE.gpu_name and entry["precision"] == "fp16"
    )
    assert not [p for p in (tmp_path / "engines").iterdir() if p.name.startswith(".")]


def test_tensorrt_says_why_not(tmp_path: Path) -> None:
    from engines.tensorrt_engine import ensure_engine

    with pytest.raises(EngineUnavailable, match=r"^TensorRT is not usable here: no module named"):
        ensure_engine(resolve_model("us-seg").onnx_path, "fp16", tmp_path)


def test_fp16_copy_keeps_fp32_io(tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common", reason="needs the gpu extra's onnxconverter-common")
    onnx = pytest.importorskip("onnx")
    from engines.precision import fp16_copy, is_qdq

    src = resolve_model("us-seg").onnx_path
    out = fp16_copy(src, tmp_path)
    assert fp16_copy(src, tmp_path) == out  # made once, then reused
    model = onnx.load(str(out))
    floats = [i.data_type for i in model.graph.initializer if i.data_type in (1, 10)]
    assert floats and all(t == 10 for t in floats)  # every float weight is fp16
    assert model.graph.input[0].type.tensor_type.elem_type == 1  # fp32 in
    assert model.graph.output[0].type.tensor_type.elem_type == 1  # fp32 out
    assert not is_qdq(out)
    x = np.random.default_rng(0).random((1, 1, 256, 256), dtype=np.float32)
    fp32 = OnnxRuntimeEngine(src).run({"image": x})["logits"]
    fp16 = OnnxRuntimeEngine(out).run({"image": x})["logits"]  # ONNX Runtime runs it too
    assert fp16.dtype == np.float32
    np.testing.assert_allclose(fp16, fp32, rtol=0, atol=0.05)


# --- int8 (Q/DQ) variant -------------------------------------------------------------------


def test_int8_variant_is_qdq_and_close_to_fp32() -> None:
    pytest.importorskip("onnx")
    from engines.precision import is_qdq
    from tools.int8_check import MIN_AGREEMENT, MIN_ON_BOUNDARY, compare

    ref = resolve_model("us-seg-int8")
    assert ref.card.precision == "int8" and is_qdq(ref.onnx_path)
    assert not is_qdq(resolve_model("us-seg").onnx_path)
    vs = ref.card.raw["vs_fp32"]
    assert vs["metric"] == "mean_foreground_dice" and 0 <= vs["lost"] < 0.02
    int8 = load_pipeline(EngineSpec(model="us-seg-int8"))
    fp32 = load_pipeline(EngineSpec(model="us-seg"))
    assert int8.precision == "int8" and fp32.precision == "fp32"
    int8.close()
    fp32.close()
    # On whatever CPU runs this (VNNI, AVX2, AVX-512 without VNNI, ARM). Quantisation moves the
    # logits a little, which flips a label only where fp32's two best classes nearly tie: on the
    # class boundaries, a 1-2 px band of 2-7% of the pixels. So at most 1% of the pixels may
    # differ, and most of those must lie within 1 px of fp32's boundaries. A kernel that
    # computes something else (u8s8 saturation: 4-9% differ, 70-85% of them inside regions)
    # fails both.
    r = compare("us-seg-int8", "us-seg", [2000, 2003, 5100], 1)
    assert r["agreement"] >= MIN_AGREEMENT
    assert r["on_boundary"] >= MIN_ON_BOUNDARY


# --- the engine CLI without a GPU --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["engine", "build", "us-seg", "--precision", "fp16"], ["engine", "info"]],
)
def test_engine_cli_without_gpu_fails_in_one_line(args: list[str], tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-m", "tools.cli", *args, "--cache", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medstream engine: TensorRT is not usable here")
    assert "Traceback" not in run.stderr
