"""Small real pipelines for the tool tests: the demo graph without sinks, in a temp folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "ultrasound_seg.yaml"


def light_config(tmp_path: Path, fps: float = 30, size: int = 256, name: str = "p.yaml") -> Path:
    """The demo graph (phantom -> us-seg -> render) at `size` px, no sinks, run dir in tmp."""
    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = str(tmp_path / "run")
    grab, _infer, render = data["stages"]
    grab["fps"] = fps
    grab["source"].update(width=size, height=size)
    render["sinks"] = []
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def medstream(*args: str, **popen) -> subprocess.Popen:
    """`medstream ARGS` (the console script's entry point) as a child process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tools.cli", *args]
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **popen)
