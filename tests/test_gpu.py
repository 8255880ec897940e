"""GPU tests: TensorRT build and cache reuse, CUDA vs CPU preprocessing, TensorRT vs ONNX Runtime.

Opt-in: they need an NVIDIA GPU, TensorRT and pycuda. Run them with

    pip install -e '.[gpu,test]'
    MEDSTREAM_GPU_TESTS=1 pytest -m gpu tests/test_gpu.py

Without MEDSTREAM_GPU_TESTS=1 every test here is skipped with that message. With it set, a
machine where TensorRT is not usable fails loudly instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines import EngineSpec, list_models, load_pipeline
from engines.backends import select_backend, tensorrt_problem
from engines.cuda_preprocess import CUDA_TOLERANCE
from engines.preprocess import preprocess
from engines.registry import ModelInput, resolve_model
from stream.sources.phantom import phantom_frame
from tools.eval_seg import spec_for_seed

from .test_engine_cpu import CASES, _input

HOW = (
    "GPU test: set MEDSTREAM_GPU_TESTS=1 on an NVIDIA host with the gpu extra "
    "(pip install -e '.[gpu,test]'; MEDSTREAM_GPU_TESTS=1 pytest -m gpu tests/test_gpu.py)"
)
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(os.environ.get("MEDSTREAM_GPU_TESTS") != "1", reason=HOW),
]
ROOT = Path(__file__).resolve().parents[1]
FP32_LOGIT_TOLERANCE = 1e-2  # TensorRT fp32 (TF32 off by default for strongly typed fp32)


@pytest.fixture(scope="module", autouse=True)
def _gpu_usable() -> None:
    problem = tensorrt_problem()
    assert problem is None, f"MEDSTREAM_GPU_TESTS=1 but TensorRT is not usable: {problem}"


def _frame(channels: str) -> tuple[np.ndarray, str]:
    image = phantom_frame(spec_for_seed(5300), 4).image
    if channels == "gray":
        return image, "gray8"
    return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2)), "bgr8"


def test_build_then_reuse_from_cache(tmp_path: Path) -> None:
    from engines.tensorrt_engine import ensure_engine

    onnx_path = resolve_model("us-seg").onnx_path
    first = ensure_engine(onnx_path, "model", tmp_path)
    assert first.built and first.path.is_file() and first.parts.precision == "fp32"
    again = ensure_engine(onnx_path, "model", tmp_path)
    assert not again.built and again.key == first.key and again.path == first.path
    fp16 = ensure_engine(onnx_path, "fp16", tmp_path)
    assert fp16.built and fp16.key != first.key and fp16.parts.precision == "fp16"
    int8 = ensure_engine(resolve_model("us-seg-int8").onnx_path, "model", tmp_path)
    assert int8.parts.precision == "int8"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(("pixel_format", "channels", "size"), CASES)
def test_cuda_preprocessing_matches_cpu(
    pixel_format: str, channels: str, size: tuple[int, int], dtype: str
) -> None:
    import pycuda.driver as cuda

    from engines.cuda_preprocess import CudaPreprocessor

    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:
        rng = np.random.default_rng(sum(size))
        shape = size if pixel_format == "gray8" else (*size, 3)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        spec = ModelInput(**{**_input(channels, 256, 192).__dict__, "dtype": dtype})
        stream = cuda.Stream()
        want = preprocess(image, pixel_format, spec)
        dst = cuda.mem_alloc(want.nbytes)
        CudaPreprocessor(spec, stream)(image, pixel_format, dst)
        got = np.empty_like(want)
        cuda.memcpy_dtoh_async(got, dst, stream)
        stream.synchronize()
        tol = CUDA_TOLERANCE if dtype == "float32" else 4e-3
        np.testing.assert_allclose(
            got.astype(np.float32), want.astype(np.float32), rtol=0, atol=tol
        )
    finally:
        ctx.pop()
        ctx.detach()


@pytest.mark.parametrize("model", list_models())
@pytest.mark.parametrize("precision", ["model", "fp16"])
def test_tensorrt_matches_onnxruntime(model: str, precision: str, tmp_path: Path) -> None:
    card = resolve_model(model).card
    if precision == "fp16" and card.precision == "int8":
        pytest.skip("an int8 model is built as int8")
    image, fmt = _frame(card.input.channels)
    trt = load_pipeline(
        EngineSpec(model=model, backend="tensorrt", precision=precision, engine_cache=str(tmp_path))
    )
    ort = load_pipeline(EngineSpec(model=model, backend="onnxruntime"))
    assert trt.backend == "tensorrt" and trt.device.startswith("cuda")
    a, b = trt(image, fmt), ort(image, fmt)
    exact = card.precision == "fp32" and precision == "model"
    if card.task == "segmentation":
        agree = np.mean(a.mask == b.mask)
        assert agree > (0.999 if exact else 0.98), agree
    else:
        diff = np.abs(a.image.astype(int) - b.image.astype(int))
        assert diff.max() <= (2 if exact else 8) and diff.mean() < (0.1 if exact else 1.0)
    trt.close()
    ort.close()


def test_auto_picks_tensorrt_here() -> None:
    sel = select_backend("auto", "us-seg")
    assert sel.backend == "tensorrt", sel.reason
    p = load_pipeline(EngineSpec(model="us-seg"))
    assert (p.backend, p.precision) == ("tensorrt", "fp32") and p.device.startswith("cuda")
    p.close()


def test_engine_cli_build(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tools.cli", "engine", "build", "us-seg", "--precision", "fp16"]
    run = subprocess.run(
        [*cmd, "--cache", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    assert ".engine" in run.stdout and "fp16" in run.stdout
    info = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "engine",
            "info",
            "us-seg",
            "--precision",
            "fp16",
            "--cache",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.returncode == 0 and "cached" in info.stdout, info.stderr


def test_tensorrt_batch_matches_one_frame_at_a_time(tmp_path: Path) -> None:
    """`run_batch` on TensorRT (the dynamic profile 1..4; 6 frames: a chunk of 4, then 2) gives
    each frame's result as a call of its own does."""
    trt = load_pipeline(EngineSpec(model="us-seg", backend="tensorrt", engine_cache=str(tmp_path)))
    frames = [phantom_frame(spec_for_seed(5300 + i), 4).image for i in range(6)]
    try:
        batched = trt.run_batch(frames, ["gray8"] * len(frames))  # type: ignore[attr-defined]
        single = [trt(f, "gray8") for f in frames]
    finally:
        trt.close()
    for b, s in zip(batched, single, strict=True):
        assert np.mean(b.mask == s.mask) > 0.999
