"""What machine a measurement ran on (no heavy imports: used by the console script's tools)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide which int8 / bf16 kernels ONNX Runtime and PyTorch run.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    """KERNEL_FLAGS -> present, from /proc/cpuinfo (all False where it cannot be read)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {flag: flag in flags for flag in KERNEL_FLAGS}


def describe_flags(flags: dict[str, bool]) -> str:
    """'avx2 avx512f avx512_vnni; no avx_vnni amx_int8': which kernel flags a CPU has."""
    have = " ".join(f for f, on in flags.items() if on) or "none of " + " ".join(flags)
    lacks = " ".join(f for f, on in flags.items() if not on)
    return f"{have}; no {lacks}" if lacks and have != "none of " + " ".join(flags) else have


def cpu_description() -> str:
    """The CPU model and its kernel flags, as cards and docs quote them."""
    return f"{cpu_name()} ({describe_flags(cpu_flags())})"
