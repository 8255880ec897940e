"""The CUDA preprocessing kernel, checked without a GPU.

g++ compiles engines/cuda/preprocess.cu as C++ (tests/cuda_shim.cpp) and runs it over the whole
grid on the CPU with the host tables of engines/cuda_preprocess.py: the kernel's arithmetic must
match the float64 reference to the stated tolerance. nvcc, where installed, compiles it to PTX.
What stays unverified here: pycuda launching it on a real GPU (tests/test_gpu.py does that).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engines.cuda_preprocess import (
    BLOCK,
    CUDA_TOLERANCE,
    KERNEL_FILE,
    kernel_params,
    resize_tables,
)
from engines.preprocess import preprocess
from engines.registry import ModelInput

from .test_engine_cpu import CASES, _input, _preprocess_ref

SHIM = Path(__file__).resolve().parent / "cuda_shim.cpp"
FP16_TOLERANCE = 4e-3  # fp16 has 11 significant bits: |v| < 8 rounds within 2^-8


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to compile the kernel as C++ (apt-get install g++)")
    out = tmp_path_factory.mktemp("shim") / "shim.so"
    cmd = ["g++", "-O1", "-std=c++17", "-shared", "-fPIC", f'-DMS_KERNEL_FILE="{KERNEL_FILE}"']
    run = subprocess.run([*cmd, str(SHIM), "-o", str(out)], capture_output=True, text=True)
    if run.returncode != 0 and "_Float16" in run.stderr:
        pytest.skip("this g++ has no _Float16 (needs GCC 12+ on x86-64)")
    assert run.returncode == 0, run.stderr
    return ctypes.CDLL(str(out))


def run_kernel(
    lib: ctypes.CDLL, image: np.ndarray, pixel_format: str, spec: ModelInput
) -> np.ndarray:
    h, w = image.shape[:2]
    tables = [*resize_tables(h, spec.height), *resize_tables(w, spec.width)]
    params = kernel_params(pixel_format, spec)
    fp16 = spec.dtype == "float16"
    dst = np.full(
        (1, spec.num_channels, spec.height, spec.width), np.nan, np.float16 if fp16 else np.float32
    )
    src = np.ascontiguousarray(image)

    def ptr(a: np.ndarray) -> ctypes.c_void_p:
        return ctypes.c_void_p(a.ctypes.data)

    lib.shim_run(
        ctypes.c_int(int(fp16)),
        ptr(src),
        ctypes.c_int(w),
        ctypes.c_int(1 if image.ndim == 2 else 3),
        *(ptr(t) for t in tables),
        ptr(params),
        ptr(dst),
        ctypes.c_int(spec.height),
        ctypes.c_int(spec.width),
        ctypes.c_int(spec.num_channels),
        ctypes.c_int(BLOCK[0]),
        ctypes.c_int(BLOCK[1]),
    )
    return dst


@pytest.mark.parametrize(("pixel_format", "channels", "size"), CASES)
def test_kernel_matches_float64_reference(
    shim, pixel_format: str, channels: str, size: tuple[int, int]
) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(sum(size) + 7)
    shape = size if pixel_format == "gray8" else (*size, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    spec = _input(channels, 256, 192)
    got = run_kernel(shim, image, pixel_format, spec)
    want = _preprocess_ref(image, pixel_format, spec)
    assert not np.isnan(got).any(), "the kernel left output pixels unwritten"
    np.testing.assert_allclose(got, want, rtol=0, atol=CUDA_TOLERANCE)
    np.testing.assert_allclose(
        got, preprocess(image, pixel_format, spec), rtol=0, atol=CUDA_TOLERANCE
    )


@pytest.mark.parametrize("pixel_format", ["gray8", "bgr8"])
def test_kernel_fp16_output(shim, pixel_format: str) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    shape = (300, 417) if pixel_format == "gray8" else (300, 417, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    spec32 = _input("gray" if pixel_format == "gray8" else "rgb", 128, 160)
    spec16 = ModelInput(**{**spec32.__dict__, "dtype": "float16"})
    got = run_kernel(shim, image, pixel_format, spec16)
    assert got.dtype == np.float16
    want = _preprocess_ref(image, pixel_format, spec16)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=FP16_TOLERANCE)
    # the CPU path casts the same float32 values to fp16: identical up to one fp16 step
    cpu = preprocess(image, pixel_format, spec16)
    assert cpu.dtype == np.float16
    np.testing.assert_allclose(
        got.astype(np.float32), cpu.astype(np.float32), rtol=0, atol=FP16_TOLERANCE
    )


def test_resize_tables_follow_opencv_convention() -> None:
    i0, i1, a = resize_tables(512, 256)  # exact 2x shrink: between source pixels 2i and 2i+1
    np.testing.assert_array_equal(i0[:3], [0, 2, 4])
    np.testing.assert_array_equal(i1[:3], [1, 3, 5])
    np.testing.assert_allclose(a[:3], 0.5)
    i0, i1, a = resize_tables(10, 20)  # enlarging: clamped at the borders
    assert (i0[0], i1[0], a[0]) == (0, 1, 0.0) and (i0[-1], i1[-1], a[-1]) == (9, 9, 0.0)


def test_kernel_params() -> None:
    spec = ModelInput("image", "gray", 8, 8, "float32", (0.25,), (0.5,))
    p = kernel_params("bgr8", spec)
    np.testing.assert_allclose(p[:3], [0.114, 0.587, 0.299], rtol=1e-6)  # B, G, R weights
    np.testing.assert_allclose(p[9], 1 / 127.5, rtol=1e-6)
    np.testing.assert_allclose(p[12], 0.5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit's nvcc")
def test_kernel_compiles_with_nvcc(tmp_path: Path) -> None:
    out = tmp_path / "preprocess.ptx"
    run = subprocess.run(
        ["nvcc", "--ptx", "-std=c++17", "-o", str(out), str(KERNEL_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    ptx = out.read_text()
    assert ".entry ms_preprocess_f32" in ptx and ".entry ms_preprocess_f16" in ptx
