"""A regular (non-editable) install: the tools find the bundled configs in the installed package.

The wheel is built from a copy of the source (no build isolation: offline) and installed into a
fresh venv that sees this environment's dependencies but not this source tree; the commands run
from an empty working directory, so nothing can come from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["stream", "engines", "tools", "configs", "pyproject.toml", "setup.py", "README.md"]


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the venv's bin folder, an empty working directory)."""
    for module in ("setuptools", "wheel"):
        pytest.importorskip(module, reason=f"building the wheel offline needs {module} (test extra)")
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(p, src / name)
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(base / "dist"), str(src)],
        cwd=base,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((base / "dist").glob("medstream-*.whl"))
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    where = _run(
        [str(env_dir / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=base,
    )
    purelib = Path(where.stdout.strip())
    assert purelib.is_dir(), where.stdout + where.stderr
    # the dependencies of this environment, as plain paths (their .pth files, among them this
    # checkout's editable install, are not processed)
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (purelib / "medstream_test_deps.pth").write_text("\n".join(deps) + "\n")
    install = _run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "-q", "--no-deps", str(wheel)],
        cwd=base,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    work = base / "work"
    work.mkdir()
    yield env_dir / "bin", work


@pytest.mark.slow
def test_the_installed_package_is_not_this_checkout(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    r = _run(
        [str(bin_dir / "python"), "-c",
         "import stream, tools.soak as s; print(stream.__file__); print(s.DEMO); "
         "print(s.DEMO.is_file())"],
        cwd=work,
    )
    assert r.returncode == 0, r.stderr
    stream_file, demo, exists = r.stdout.split()
    assert not Path(stream_file).is_relative_to(ROOT), stream_file
    assert Path(demo).name == "ultrasound_seg.yaml" and not Path(demo).is_relative_to(ROOT)
    assert exists == "True"


@pytest.mark.slow
def test_installed_commands_find_their_configs(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    medstream = str(bin_dir / "medstream")
    r = _run([medstream, "--version"], cwd=work)
    assert r.returncode == 0 and r.stdout.startswith("medstream "), r.stderr
    # `configs/NAME.yaml` from a folder without one: the installed package's
    r = _run([medstream, "validate", "configs/ultrasound_seg.yaml"], cwd=work)
    assert r.returncode == 0 and "ok (3 stages" in r.stdout, r.stdout + r.stderr
    r = _run([medstream, "validate", "configs/no_such.yaml"], cwd=work)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_installed_soak_and_bench_pipelines_run(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    medstream = str(bin_dir / "medstream")
    r = _run(
        [medstream, "soak", "--seconds", "8", "--warmup", "3", "--window", "2", "--fps", "30",
         "--out", "soak", "--json", "soak.json"],
        cwd=work,
    )
    assert "Traceback" not in r.stderr, r.stderr
    result = json.loads((work / "soak.json").read_text())
    assert result["run_problems"] == [], r.stdout + r.stderr
    assert result["frames"]["delivered"] > 0
    r = _run(
        [medstream, "bench", "--quick", "--only", "pipelines", "--out", "bench"], cwd=work,
        timeout=400,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    bench = json.loads((work / "bench" / "bench.json").read_text())
    assert bench["pipelines"] and bench["pipelines"][0]["multi_process"]["delivered"] > 0
