"""`medstream gpu-check` (tools/gpu_check.py) on a host without a GPU: the table, the skip
reasons, the exit status; the kernel launch arguments through the CPU build of the kernel.

What stays unverified without a GPU: the launches through pycuda, CuPy and cuda-python, and
the PyTorch / ONNX Runtime / TensorRT runs on CUDA (run `make gpu-check` on an NVIDIA host).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.preprocess import preprocess
from tools import gpu_check
from tools.errors import OutputError
from tools.gpu_check import CHECKS, Host, Skip, run_checks

from .test_cuda_kernel_cpu import shim  # noqa: F401  (the g++ build of the kernel, a fixture)

ROOT = Path(__file__).resolve().parents[1]
NO_DRIVER = Host("no NVIDIA driver loaded (test)", lambda m: True)


def test_every_check_skips_with_the_driver_reason_when_there_is_no_gpu() -> None:
    results = run_checks(NO_DRIVER)
    assert [r.name for r in results] == [name for name, _ in CHECKS]
    assert {r.status for r in results} == {"skipped"}
    assert all(r.detail == "no NVIDIA driver loaded (test)" for r in results)


def test_missing_packages_are_named_in_the_skip_reason() -> None:
    results = run_checks(Host(None, lambda m: False))
    details = {r.name: r.detail for r in results}
    assert {r.status for r in results} == {"skipped"}
    assert details["cuda kernel (pycuda)"].startswith("pycuda not installed")
    assert details["cuda kernel (cupy RawModule)"].startswith("cupy not installed")
    assert details["cuda kernel (cuda-python NVRTC)"].startswith("cuda not installed")
    assert details["pytorch cuda vs onnxruntime cpu"].startswith("torch not installed")
    assert details["tensorrt build + run + cache reuse"].startswith("tensorrt not installed")


def test_a_failure_is_reported_and_the_other_checks_still_run() -> None:
    def boom(host: Host) -> str:
        raise RuntimeError("kernel launch failed\nsecond line")

    def skip(host: Host) -> str:
        raise Skip("not here")

    results = run_checks(NO_DRIVER, [("a", boom), ("b", skip), ("c", lambda h: "fine")])
    assert [(r.status, r.detail) for r in results] == [
        ("failed", "RuntimeError: kernel launch failed"),
        ("skipped", "not here"),
        ("ran", "fine"),
    ]
    text = gpu_check.table(results)
    assert "1 ran, 1 skipped, 1 failed" in text.splitlines()[-1]


def test_exit_status_is_1_only_when_a_check_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def boom(host: Host) -> str:
        raise AssertionError("max |GPU - CPU| 1e-2 > 1e-4")

    def skip(host: Host) -> str:
        raise Skip("no GPU")

    monkeypatch.setattr(gpu_check, "CHECKS", [("skips", skip)])
    assert gpu_check.main(["--json", str(tmp_path / "a.json")]) == 0
    monkeypatch.setattr(gpu_check, "CHECKS", [("skips", skip), ("fails", boom)])
    assert gpu_check.main(["--json", str(tmp_path / "b.json")]) == 1
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [(r["name"], r["status"]) for r in rows] == [("skips", "skipped"), ("fails", "failed")]


def test_an_unwritable_json_path_stops_before_the_checks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def check(host: Host) -> str:
        ran.append("check")  # on a GPU host: a TensorRT build of minutes, then the write failed
        return "ok"

    monkeypatch.setattr(gpu_check, "CHECKS", [("check", check)])
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot write the JSON table .*is a file, not a folder"):
        gpu_check.main(["--json", str(tmp_path / "file" / "g.json")])
    assert ran == []


@pytest.mark.slow
def test_cli_on_this_host_prints_one_table_and_exits_0(tmp_path: Path) -> None:
    if not gpu_check.probe_host().driver_problem:
        pytest.skip("this host has an NVIDIA driver: the checks would run (make gpu-check)")
    run = subprocess.run(
        [sys.executable, "-m", "tools.cli", "gpu-check", "--json", str(tmp_path / "g.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["check", "status"] and len(lines) == len(CHECKS) + 2
    assert all("skipped" in line and "no NVIDIA driver" in line for line in lines[1:-1])
    assert lines[-1] == f"0 ran, {len(CHECKS)} skipped, 0 failed"
    assert len(json.loads((tmp_path / "g.json").read_text())) == len(CHECKS)


def test_kernel_comparison_catches_a_wrong_output() -> None:
    def exact(image: np.ndarray, fmt: str, spec: object) -> np.ndarray:
        return preprocess(image, fmt, spec)  # type: ignore[arg-type]

    def off(image: np.ndarray, fmt: str, spec: object) -> np.ndarray:
        return exact(image, fmt, spec).astype(np.float32) + 1e-3

    assert "cases match the CPU reference" in gpu_check._compare_kernel(exact)
    with pytest.raises(AssertionError, match=r"max \|GPU - CPU\|"):
        gpu_check._compare_kernel(off)


def test_kernel_arguments_in_launch_order(shim: ctypes.CDLL) -> None:  # noqa: F811
    """The argument list the CuPy and cuda-python launches build (`_kernel_args`), handed to
    the kernel compiled for the CPU: every case must match the CPU reference."""

    def launch(image: np.ndarray, fmt: str, spec: object) -> np.ndarray:
        arrays, ints = gpu_check._kernel_args(image, fmt, spec)
        fp16 = spec.dtype == "float16"  # type: ignore[attr-defined]
        out = np.full(
            (1, ints[4], ints[2], ints[3]), np.nan, np.float16 if fp16 else np.float32
        )
        ptrs = [ctypes.c_void_p(a.ctypes.data) for a in arrays]
        shim.shim_run(
            ctypes.c_int(int(fp16)),
            ptrs[0],
            ctypes.c_int(ints[0]),
            ctypes.c_int(ints[1]),
            *ptrs[1:],
            ctypes.c_void_p(out.ctypes.data),
            *(ctypes.c_int(i) for i in ints[2:]),
            ctypes.c_int(32),
            ctypes.c_int(8),
        )
        return out

    assert "5 cases match" in gpu_check._compare_kernel(launch)
