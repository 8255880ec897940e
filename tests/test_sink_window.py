"""The window sink: a clear one-line error without a display; frames shown on a real X server
(Xvfb) when one can be started."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stream.frame import Frame
from stream.sinks import SINK_TYPES, SinkError, open_sink
from stream.sinks.window import WindowSink, WindowSpec, display_problem

from .helpers import wait_until


def test_no_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SINK_TYPES["window"][0] is WindowSpec
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    t0 = time.monotonic()
    with pytest.raises(SinkError) as err:
        open_sink({"type": "window"}, "stages[1].sinks[0]", "render")
    assert time.monotonic() - t0 < 1.0  # refused before any attempt to connect: a sanity bound
    assert str(err.value) == (
        "window sink 'render': cannot open a window: no display (neither DISPLAY nor "
        "WAYLAND_DISPLAY is set); use the viewer sink (browser) instead, or run where a "
        "desktop is available"
    )


def test_display_problems_are_named() -> None:
    assert "no X server socket /tmp/.X11-unix/X93" in display_problem({"DISPLAY": ":93"})
    assert "is not a display name" in display_problem({"DISPLAY": "nonsense"})
    assert "socket is not in XDG_RUNTIME_DIR" in display_problem(
        {"WAYLAND_DISPLAY": "wayland-9", "XDG_RUNTIME_DIR": "/nonexistent"}
    )


@pytest.fixture
def xvfb(tmp_path: Path) -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb) to test a real window")
    for number in range(91, 120):
        if not Path(f"/tmp/.X11-unix/X{number}").exists():
            break
    proc = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        socket_file = Path(f"/tmp/.X11-unix/X{number}")
        wait_until(lambda: socket_file.exists() or proc.poll() is not None, 10, 0.05)
        if not socket_file.exists():
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_frames_are_shown_in_a_real_window(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb)
    sink = WindowSink(WindowSpec(title="medstream test"), "render")
    try:
        t0 = time.perf_counter()
        for seq in range(20):
            image = np.full((120, 160, 3), seq * 10, np.uint8)
            sink.write(image, Frame("s", seq, 0, 0, image, "bgr8"))
            time.sleep(0.02)
        assert time.perf_counter() - t0 < 2.0
        wait_until(lambda: sink.frames_shown >= 5, 5)
    finally:
        sink.close()
    assert sink.frames_shown >= 5
    assert sink.frames_shown + sink.drops().get("replaced", 0) <= 20
    assert os.environ["DISPLAY"] == xvfb
