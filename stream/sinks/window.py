"""WindowSink: show the rendered frames in a desktop window (OpenCV HighGUI).

All HighGUI calls run on one display thread that shows the newest frame (`write` only swaps a
reference). Opening checks that a display is reachable and that this OpenCV build can open a
window, in a short-lived child process, because a GUI toolkit that cannot reach its display may
abort the whole process; without a display it is a `SinkError` saying what to use instead.
Closing the window by hand stops the display (counted as `window_closed` drops from then on).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.frame import Frame
from stream.sinks.base import SinkBase, SinkError
from stream.spec import bounded

WAIT_SLICE_S = 0.03
PROBE_TIMEOUT_S = 15.0
CLOSE_JOIN_S = 2.0
_PROBE = (
    "import cv2, numpy as np\n"
    "cv2.namedWindow('medstream-probe', cv2.WINDOW_AUTOSIZE)\n"
    "cv2.imshow('medstream-probe', np.zeros((8, 8, 3), np.uint8)); cv2.waitKey(1)\n"
    "cv2.destroyAllWindows(); cv2.waitKey(1)\n"
)


@dataclass
class WindowSpec:
    """Config of a `window` sink."""

    title: str = bounded("", doc="window title (default: the stage id)")
    fullscreen: bool = bounded(False, doc="open the window full screen")


def display_problem(env: dict[str, str]) -> str | None:
    """Why no window can be shown with `env` (None: a display looks reachable)."""
    x11, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    if not x11 and not wayland:
        return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    if wayland and not x11:
        runtime = env.get("XDG_RUNTIME_DIR", "")
        if not (Path(runtime) / wayland).exists():
            return f"WAYLAND_DISPLAY={wayland} but its socket is not in XDG_RUNTIME_DIR"
        return None
    host, _, number = x11.rpartition(":")
    number = number.split(".")[0]
    if not number.isdigit():
        return f"DISPLAY={x11!r} is not a display name like ':0'"
    if host in ("", "unix"):
        if not Path(f"/tmp/.X11-unix/X{number}").exists():
            return f"DISPLAY={x11} but no X server socket /tmp/.X11-unix/X{number}"
        return None
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=2.0):
            return None
    except OSError as e:
        return f"DISPLAY={x11} is not reachable ({e.strerror or e})"


def probe_window(env: dict[str, str]) -> str | None:
    """Open and close a tiny window in a child process; why it failed, or None."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"opening a test window took over {PROBE_TIMEOUT_S:.0f} s"
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        return f"OpenCV cannot open a window: {lines[-1] if lines else f'exit {proc.returncode}'}"
    return None


class WindowSink(SinkBase):
    """Show the newest rendered frame in a window (see the module doc)."""

    kind = "window"

    def __init__(self, spec: WindowSpec, stage_id: str, source_fps: float | None = None) -> None:
        super().__init__(stage_id, source_fps)
        self.spec = spec
        self.title = spec.title or stage_id
        env = dict(os.environ)
        why = display_problem(env) or probe_window(env)
        if why is not None:
            raise SinkError(
                f"{self.who}: cannot open a window: {why}; "
                "use the viewer sink (browser) instead, or run where a desktop is available"
            )
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self.frames_shown = 0
        self.user_closed = False
        self._ready = threading.Event()
        self._open_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"window-{stage_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(PROBE_TIMEOUT_S) or self._open_error is not None:
            self.close()
            why = self._open_error or f"no window within {PROBE_TIMEOUT_S:.0f} s"
            raise SinkError(f"{self.who}: cannot open a window: {why}")

    def _write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Make `image_bgr` the frame to show next (kept by reference)."""
        with self._cond:
            if self.user_closed:
                self.drop("window_closed")
                return
            if self._image is not None:
                self.drop("replaced")  # the display thread was slower than the stream
            self._image = image_bgr
            self._cond.notify()

    def _run(self) -> None:
        import cv2

        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            if self.spec.fullscreen:
                cv2.setWindowProperty(self.title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
        except cv2.error as e:
            self._open_error = " ".join(str(e).split())
            return
        finally:
            self._ready.set()
        shown = False
        try:
            while not self.closed:
                with self._cond:
                    self._cond.wait_for(
                        lambda: self._image is not None or self.closed, WAIT_SLICE_S
                    )
                    image, self._image = self._image, None
                if image is not None:
                    cv2.imshow(self.title, image)
                    self.frames_shown += 1
                    shown = True
                cv2.waitKey(1)
                if shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    with self._cond:
                        self.user_closed = True
                    return
        finally:
            cv2.destroyAllWindows()
            cv2.waitKey(1)

    def _close(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self._thread.join(CLOSE_JOIN_S)
