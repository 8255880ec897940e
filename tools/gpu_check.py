"""Every GPU path this host can run, each ran / skipped (why) / failed (why), in one table.

    make gpu-check                     # or: medstream gpu-check [--json out/gpu_check.json]

The checks (no network; a few minutes on a GPU host, most of it the TensorRT builds):

- cuda kernel via pycuda / CuPy / cuda-python: engines/cuda/preprocess.cu compiled at run time
  (pycuda's SourceModule, CuPy's RawModule, or NVRTC + the driver API of cuda-python) and
  launched on frames of several sizes and pixel formats; every output must match the CPU
  reference (engines/preprocess.py) within CUDA_TOLERANCE (fp32 output) or FP16_TOLERANCE.
- pytorch cuda: each bundled TorchScript network on torch.cuda against ONNX Runtime on the CPU.
- onnxruntime cuda: each bundled model on ONNX Runtime's CUDA provider against its CPU provider.
- tensorrt: us-seg built (fp32, fp16) and us-seg-int8 built, run against ONNX Runtime on the CPU,
  then fetched again from the engine cache without a rebuild (engines/engine_cache.py).

A check whose package or device is missing is skipped with the reason; skips are not failures.
The exit status is 1 if any check failed, else 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tools.errors import writable_output

NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
FP16_TOLERANCE = 4e-3  # fp16 keeps 11 significant bits: |v| < 8 rounds within 2^-8
# Kernel cases: (pixel format, model channels, frame height, width, output dtype).
KERNEL_CASES = [
    ("gray8", "gray", 512, 512, "float32"),  # the live ultrasound case: exact 2x shrink
    ("gray8", "gray", 301, 417, "float32"),  # odd sizes: border clamping, non-integer ratios
    ("gray8", "gray", 100, 90, "float32"),  # enlarging
    ("bgr8", "rgb", 480, 640, "float32"),  # channel swap
    ("bgr8", "gray", 480, 640, "float16"),  # colour -> grey, fp16 output
]
# Network outputs: labels may flip only on near-ties; a denoised uint8 image within 2 levels.
MIN_LABEL_AGREEMENT = 0.999
MAX_IMAGE_DIFF = 2


class Skip(Exception):
    """A check that cannot run on this host; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # "ran", "skipped" or "failed"
    detail: str
    seconds: float


@dataclass(frozen=True)
class Host:
    """What the checks need to know about the host (injected in tests)."""

    driver_problem: str | None  # None where an NVIDIA driver is loaded
    has_module: Callable[[str], bool]


def probe_host() -> Host:
    """This host: is an NVIDIA driver loaded, which packages import."""
    problem = None  # elsewhere than Linux each package finds (or misses) the device itself
    if platform.system() == "Linux" and not NVIDIA_DRIVER_FILE.exists():
        problem = f"no NVIDIA driver loaded ({NVIDIA_DRIVER_FILE} absent): no GPU on this host"
    return Host(problem, lambda m: importlib.util.find_spec(m) is not None)


def _need(host: Host, *modules: str, extra: str) -> None:
    if host.driver_problem:
        raise Skip(host.driver_problem)
    for module in modules:
        if not host.has_module(module):
            raise Skip(f"{module} not installed ({extra})")


# --- the CUDA preprocessing kernel ------------------------------------------------------


def _kernel_inputs() -> Iterator[tuple[str, np.ndarray, Any, np.ndarray]]:
    """(case name, frame, model input spec, CPU reference) for each KERNEL_CASES entry."""
    from engines.preprocess import preprocess
    from engines.registry import ModelInput

    rng = np.random.default_rng(7)
    for fmt, channels, h, w, dtype in KERNEL_CASES:
        n = 1 if channels == "gray" else 3
        spec = ModelInput(
            "image", channels, 192, 256, dtype, (0.2, 0.4, 0.3)[:n], (0.25, 0.3, 0.2)[:n]
        )
        image = rng.integers(0, 256, (h, w) if fmt == "gray8" else (h, w, 3), dtype=np.uint8)
        yield f"{fmt}->{channels} {w}x{h} {dtype}", image, spec, preprocess(image, fmt, spec)


def _kernel_args(image: np.ndarray, fmt: str, spec: Any) -> tuple[list[np.ndarray], list[int]]:
    """The kernel's array arguments (frame, 6 resize tables, params) and its int arguments
    in order: src_w, cs, then after the dst pointer dst_h, dst_w, cm."""
    from engines.cuda_preprocess import kernel_params, resize_tables, source_channels

    h, w = image.shape[:2]
    arrays = [np.ascontiguousarray(image), *resize_tables(h, spec.height)]
    arrays += [*resize_tables(w, spec.width), kernel_params(fmt, spec)]
    return arrays, [w, source_channels(fmt), spec.height, spec.width, spec.num_channels]


def _compare_kernel(launch: Callable[[np.ndarray, str, Any], np.ndarray]) -> str:
    """Run `launch` on every case; raise AssertionError on the first out of tolerance."""
    from engines.cuda_preprocess import CUDA_TOLERANCE

    worst = 0.0
    for case, image, spec, want in _kernel_inputs():
        fmt = case.split("->")[0]
        got = launch(image, fmt, spec)
        err = float(np.max(np.abs(got.astype(np.float32) - want.astype(np.float32))))
        tol = CUDA_TOLERANCE if spec.dtype == "float32" else FP16_TOLERANCE
        if not err <= tol:
            raise AssertionError(f"{case}: max |GPU - CPU| {err:.2e} > {tol:g}")
        worst = max(worst, err)
    return f"{len(KERNEL_CASES)} cases match the CPU reference (max |diff| {worst:.1e})"


def _kernel_name(spec: Any) -> str:
    return "ms_preprocess_f16" if spec.dtype == "float16" else "ms_preprocess_f32"


def check_kernel_pycuda(host: Host) -> str:
    _need(host, "pycuda", extra="pip install 'medstream[gpu]'")
    import pycuda.driver as cuda

    from engines.cuda_preprocess import CudaPreprocessor

    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:

        def launch(image: np.ndarray, fmt: str, spec: Any) -> np.ndarray:
            out = np.empty((1, spec.num_channels, spec.height, spec.width), spec.dtype)
            stream = cuda.Stream()
            dst = cuda.mem_alloc(out.nbytes)
            CudaPreprocessor(spec, stream)(image, fmt, dst)
            cuda.memcpy_dtoh_async(out, dst, stream)
            stream.synchronize()
            return out

        return _compare_kernel(launch)
    finally:
        ctx.pop()
        ctx.detach()


def check_kernel_cupy(host: Host) -> str:
    _need(host, "cupy", extra="pip install cupy-cuda12x (or the wheel for your CUDA)")
    import cupy as cp

    from engines.cuda_preprocess import BLOCK, kernel_source

    module = cp.RawModule(code=kernel_source(), options=("-std=c++17",))

    def launch(image: np.ndarray, fmt: str, spec: Any) -> np.ndarray:
        arrays, ints = _kernel_args(image, fmt, spec)
        dev = [cp.asarray(a) for a in arrays]
        dst = cp.empty((1, spec.num_channels, spec.height, spec.width), spec.dtype)
        grid = (-(-spec.width // BLOCK[0]), -(-spec.height // BLOCK[1]), 1)
        args = (dev[0], np.int32(ints[0]), np.int32(ints[1]), *dev[1:], dst)
        module.get_function(_kernel_name(spec))(grid, BLOCK, (*args, *map(np.int32, ints[2:])))
        cp.cuda.Stream.null.synchronize()
        return cp.asnumpy(dst)

    return _compare_kernel(launch)


def _cuda_python() -> tuple[Any, Any]:
    """(driver, nvrtc) modules of cuda-python: `cuda.bindings` (12.6+), else the old `cuda`."""
    try:
        from cuda.bindings import driver, nvrtc
    except ImportError:
        from cuda import cuda as driver  # type: ignore[no-redef]
        from cuda import nvrtc  # type: ignore[no-redef]
    return driver, nvrtc


def _ok(result: tuple[Any, ...]) -> Any:
    """cuda-python returns (error, values...): raise on an error, else the value(s)."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"cuda-python call failed: {err!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _cuda_include_dirs() -> list[str]:
    """Folders that may hold cuda_fp16.h for NVRTC: the toolkit's and pip's nvidia packages."""
    import os

    dirs = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    found = [str(Path(d) / "include") for d in dirs if d and (Path(d) / "include").is_dir()]
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        found += [str(p.parent) for p in Path(root).glob("*/include/cuda_fp16.h")]
    return found


def check_kernel_cuda_python(host: Host) -> str:
    _need(host, "cuda", extra="pip install cuda-python")
    driver, nvrtc = _cuda_python()
    from engines.cuda_preprocess import BLOCK, kernel_source

    _ok(driver.cuInit(0))
    device = _ok(driver.cuDeviceGet(0))
    ctx = _ok(driver.cuDevicePrimaryCtxRetain(device))
    _ok(driver.cuCtxSetCurrent(ctx))
    major = _ok(driver.cuDeviceGetAttribute(
        driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device))  # fmt: skip
    minor = _ok(driver.cuDeviceGetAttribute(
        driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device))  # fmt: skip
    prog = _ok(nvrtc.nvrtcCreateProgram(kernel_source().encode(), b"preprocess.cu", 0, [], []))
    opts = [b"-std=c++17", f"--gpu-architecture=compute_{major}{minor}".encode()]
    opts += [f"-I{d}".encode() for d in _cuda_include_dirs()]
    err, *_ = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    if int(err) != 0:
        size = _ok(nvrtc.nvrtcGetProgramLogSize(prog))
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise RuntimeError(f"NVRTC: {log.decode(errors='replace').strip().splitlines()[-1:]}")
    ptx = b" " * _ok(nvrtc.nvrtcGetPTXSize(prog))
    _ok(nvrtc.nvrtcGetPTX(prog, ptx))
    ptx_buffer = np.char.array(ptx)  # as cuda-python's own examples hand PTX to the driver
    module = _ok(driver.cuModuleLoadData(ptx_buffer.ctypes.data))
    stream = _ok(driver.cuStreamCreate(0))
    allocations: list[Any] = []

    def device_copy(array: np.ndarray) -> Any:
        ptr = _ok(driver.cuMemAlloc(max(array.nbytes, 1)))
        allocations.append(ptr)
        _ok(driver.cuMemcpyHtoD(ptr, array.ctypes.data, array.nbytes))
        return ptr

    def launch(image: np.ndarray, fmt: str, spec: Any) -> np.ndarray:
        arrays, ints = _kernel_args(image, fmt, spec)
        out = np.empty((1, spec.num_channels, spec.height, spec.width), spec.dtype)
        ptrs = [device_copy(a) for a in arrays]
        dst = _ok(driver.cuMemAlloc(out.nbytes))
        allocations.append(dst)
        values: list[np.ndarray] = [np.array([int(ptrs[0])], np.uint64), np.array([ints[0]], np.int32),
                  np.array([ints[1]], np.int32), *(np.array([int(p)], np.uint64) for p in ptrs[1:]),
                  np.array([int(dst)], np.uint64), *(np.array([i], np.int32) for i in ints[2:])]  # fmt: skip
        params = np.array([v.ctypes.data for v in values], np.uint64)
        kernel = _ok(driver.cuModuleGetFunction(module, _kernel_name(spec).encode()))
        grid = (-(-spec.width // BLOCK[0]), -(-spec.height // BLOCK[1]), 1)
        _ok(driver.cuLaunchKernel(kernel, *grid, *BLOCK, 0, stream, params.ctypes.data, 0))
        _ok(driver.cuStreamSynchronize(stream))
        _ok(driver.cuMemcpyDtoH(out.ctypes.data, dst, out.nbytes))
        return out

    try:
        return _compare_kernel(launch)
    finally:
        for ptr in allocations:
            driver.cuMemFree(ptr)
        driver.cuStreamDestroy(stream)
        driver.cuModuleUnload(module)
        nvrtc.nvrtcDestroyProgram(prog)
        driver.cuDevicePrimaryCtxRelease(device)


# --- networks on the GPU against ONNX Runtime on the CPU --------------------------------


def _frame(channels: str) -> tuple[np.ndarray, str]:
    from stream.sources.phantom import phantom_frame
    from tools.eval_seg import spec_for_seed

    image = phantom_frame(spec_for_seed(5300), 4).image
    if channels == "gray":
        return image, "gray8"
    return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2)), "bgr8"


def _agreement(gpu: Any, cpu: Any, task: str) -> tuple[bool, str]:
    if task == "segmentation":
        agree = float(np.mean(gpu.mask == cpu.mask))
        return agree >= MIN_LABEL_AGREEMENT, f"labels agree {agree:.4f}"
    diff = int(np.abs(gpu.image.astype(int) - cpu.image.astype(int)).max())
    return diff <= MAX_IMAGE_DIFF, f"max |diff| {diff}"


def _against_cpu(models: list[str], load_gpu: Callable[[str], Any], device: str) -> str:
    """Each model through `load_gpu` vs ONNX Runtime CPU on one phantom frame."""
    from engines import EngineSpec, load_pipeline
    from engines.registry import resolve_model

    notes = []
    for model in models:
        card = resolve_model(model).card
        image, fmt = _frame(card.input.channels)
        gpu = load_gpu(model)
        cpu = load_pipeline(EngineSpec(model=model, backend="onnxruntime"))
        try:
            if not gpu.device.startswith(device):
                raise AssertionError(f"{model} ran on {gpu.device}, not {device}")
            ok, note = _agreement(gpu(image, fmt), cpu(image, fmt), card.task)
        finally:
            gpu.close()
            cpu.close()
        if not ok:
            raise AssertionError(f"{model}: {note} (needs >= {MIN_LABEL_AGREEMENT} / <= 2)")
        notes.append(f"{model} {note}")
    return "; ".join(notes)


def check_pytorch_cuda(host: Host) -> str:
    _need(host, "torch", extra="pip install 'medstream[train]' with a CUDA build of torch")
    import torch

    if not torch.cuda.is_available():
        raise Skip(f"torch {torch.__version__} sees no CUDA device (a CPU-only build?)")
    from engines import EngineSpec, list_models, load_pipeline
    from engines.registry import resolve_model

    models = [m for m in list_models() if resolve_model(m).torchscript_path is not None]
    return _against_cpu(
        models, lambda m: load_pipeline(EngineSpec(model=m, backend="pytorch")), "cuda"
    )


def check_onnxruntime_cuda(host: Host) -> str:
    _need(host, "onnxruntime", extra="the base install")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"onnxruntime {ort.__version__} has no CUDA provider (pip install onnxruntime-gpu)")
    from engines import EngineSpec, list_models, load_pipeline

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return _against_cpu(
        list_models(),
        lambda m: load_pipeline(EngineSpec(model=m, backend="onnxruntime", providers=providers)),
        "cuda",
    )


def check_tensorrt(host: Host) -> str:
    _need(host, "tensorrt", "pycuda", extra="pip install 'medstream[gpu]'")
    from engines import EngineSpec, load_pipeline
    from engines.backends import tensorrt_problem
    from engines.registry import resolve_model
    from engines.tensorrt_engine import ensure_engine

    problem = tensorrt_problem()
    if problem:
        raise Skip(problem)
    with tempfile.TemporaryDirectory(prefix="medstream-gpu-check-") as cache:
        notes = []
        builds: list[tuple[str, Literal["model", "fp16"]]] = [
            ("us-seg", "model"),
            ("us-seg", "fp16"),
            ("us-seg-int8", "model"),
        ]
        for model, precision in builds:
            onnx_path = resolve_model(model).onnx_path
            t0 = time.perf_counter()
            first = ensure_engine(onnx_path, precision, Path(cache))
            built_s = time.perf_counter() - t0
            again = ensure_engine(onnx_path, precision, Path(cache))
            if not first.built or again.built or again.path != first.path:
                raise AssertionError(f"{model} {precision}: the engine cache was not reused")
            spec = EngineSpec(
                model=model, backend="tensorrt", precision=precision, engine_cache=cache
            )
            exact = precision == "model" and model == "us-seg"
            trt = load_pipeline(spec)
            cpu = load_pipeline(EngineSpec(model=model, backend="onnxruntime"))
            try:
                image, fmt = _frame("gray")
                agree = float(np.mean(trt(image, fmt).mask == cpu(image, fmt).mask))
            finally:
                trt.close()
                cpu.close()
            need = MIN_LABEL_AGREEMENT if exact else 0.98  # fp16 / int8 move near-ties
            if agree < need:
                raise AssertionError(f"{model} {first.parts.precision}: labels agree {agree:.4f}")
            notes.append(
                f"{model} {first.parts.precision} built {built_s:.0f} s, reused, agree {agree:.4f}"
            )
        return "; ".join(notes)


CHECKS: list[tuple[str, Callable[[Host], str]]] = [
    ("cuda kernel (pycuda)", check_kernel_pycuda),
    ("cuda kernel (cupy RawModule)", check_kernel_cupy),
    ("cuda kernel (cuda-python NVRTC)", check_kernel_cuda_python),
    ("pytorch cuda vs onnxruntime cpu", check_pytorch_cuda),
    ("onnxruntime cuda vs cpu", check_onnxruntime_cuda),
    ("tensorrt build + run + cache reuse", check_tensorrt),
]


def run_checks(
    host: Host, checks: list[tuple[str, Callable[[Host], str]]] | None = None
) -> list[CheckResult]:
    """Each check (default: CHECKS): ran (its detail), skipped (why) or failed (the error)."""
    results = []
    for name, check in CHECKS if checks is None else checks:
        t0 = time.perf_counter()
        try:
            status, detail = "ran", check(host)
        except Skip as e:
            status, detail = "skipped", str(e)
        except Exception as e:  # a failing check is reported, the others still run
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            status, detail = "failed", f"{type(e).__name__}: {first}"
        results.append(CheckResult(name, status, detail, round(time.perf_counter() - t0, 2)))
    return results


def table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  {'status':<8}  {'s':>6}  detail"]
    lines += [
        f"{r.name:<{width}}  {r.status:<8}  {r.seconds:6.1f}  {r.detail}" for r in results
    ]
    counts = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")


def register(sub: argparse._SubParsersAction) -> None:
    """`medstream gpu-check`."""
    p = sub.add_parser(
        "gpu-check",
        help="run every GPU path this host can (CUDA kernel, PyTorch, ONNX Runtime, TensorRT)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_options(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="medstream gpu-check",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_options(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the table (and write JSON); 1 if any check failed."""
    if args.json is not None:  # before the checks (a TensorRT build takes minutes)
        writable_output(args.json, "the JSON table")
    results = run_checks(probe_host())
    print(table(results), flush=True)
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        except OSError as e:
            print(f"medstream gpu-check: cannot write {args.json}: {e.strerror}", file=sys.stderr)
            return 1
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
