"""Helpers for tests that look at what the pipeline shows: headless Chromium (Debian `chromium`;
tests skip with a reason without it), how colourful a picture is, and a phantom recording whose
truth mask is drawn as an overlay."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.frame import Annotations, Frame
from stream.recording import RecordingWriter
from stream.sources.phantom import LABELS, PhantomSpec, phantom_frame, pixel_spacing_mm


def phantom_recording(path: Path, n: int, fps: float = 30.0, size: int = 256) -> list:
    """A recording of phantom frames whose `mask` is the phantom's truth (an overlay to draw)."""
    spec = PhantomSpec(width=size, height=size, fps=fps, seed=3)
    spacing = list(pixel_spacing_mm(spec))
    writer = RecordingWriter(path, {"stage": "test"}, fsync_s=0)

    frames = []
    t = time.time_ns()
    for i in range(n):
        pf = phantom_frame(spec, i)
        f = Frame(
            "probe",
            i,
            t,
            t + 10**9,
            pf.image,
            "gray8",
            parts={"mask": pf.truth},
            annotations=Annotations("phantom-truth", list(LABELS)),
            meta={"pixel_spacing_mm": spacing},
        )
        writer.write_frame(f, "test", t)
        frames.append(f)
        t += int(1e9 / fps) + (7_000_000 if i % 5 == 0 else 0)  # irregular: every 5th is late
    writer.close()
    return frames


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "chromium is not installed: run ./.ci/debian-deps as root (make setup-test) "
            "or apt-get install chromium"
        )
    return path


def browse(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1000,700",
        "--virtual-time-budget=2500",
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def screenshot(tmp_path: Path, url: str, name: str) -> np.ndarray:
    path = tmp_path / name
    proc = browse(tmp_path, url, f"--screenshot={path}")
    assert path.exists(), proc.stderr[-2000:]
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (700, 1000, 3)
    return image


def colourful(image: np.ndarray) -> float:
    """Fraction of strongly coloured pixels (the phantom is grey: colour is annotation)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    return float(((hsv[..., 1] > 120) & (hsv[..., 2] > 80)).mean())
