"""OpenCV capture source: a camera or capture card, a video file, an RTSP/HTTP stream, or a
GStreamer pipeline.

Files are read in the grab stage's thread, in order, every frame: paced by the grab stage at the
file's own rate (or `fps`), or as fast as possible with `unpaced: true`; `loop` starts again at
the end; a frame that cannot be decoded before the last one the file states is skipped and
counted (`source_damaged`), not taken for the end. Live inputs (devices, URLs, pipelines) are
read by a thread that keeps only the newest frame (OpenCV's own buffer would otherwise add
latency); `read` returns each new frame as it
arrives (self-paced). If the grab stage sets its own `fps`, each tick takes the newest frame and
the frames in between are counted (`source_replaced`). A live input that fails or stalls (no frame for `read_timeout_s`) is
reopened with exponential backoff; the stall, each reopen and the gap in frames are reported as
events (logged and counted by the grab stage), never hidden. Opening is bounded in time
(`open_timeout_s`, OpenCV's CAP_PROP_OPEN_TIMEOUT_MSEC) and a failure is one `SourceError`
line saying what, where and why.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import cv2
import numpy as np

from stream.geometry import geometry_meta, validate_geometry_fields
from stream.sources.base import Capture, SourceError, SourceEvent, never_stop, one_line
from stream.spec import ConfigError, bounded

WAIT_SLICE_S = 0.05  # how often a waiting read() checks should_stop
MAX_DAMAGED_FRAMES = 120  # undecodable frames of a file skipped in a row before it counts as ended
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
BACKENDS = {
    "auto": cv2.CAP_ANY,
    "ffmpeg": cv2.CAP_FFMPEG,
    "gstreamer": cv2.CAP_GSTREAMER,
    "v4l2": cv2.CAP_V4L2,
}


@dataclass(frozen=True)
class CaptureSpec:
    """The `source:` section for `type: capture`."""

    input: int | str = bounded(
        "",
        doc="device index (0), device path (/dev/video0), video file, rtsp:// or http(s):// URL, "
        "or a GStreamer pipeline ending in appsink",
    )
    backend: Literal["auto", "ffmpeg", "gstreamer", "v4l2"] = bounded(
        "auto", doc="OpenCV backend; auto picks FFmpeg for files and URLs"
    )
    live: bool | None = bounded(
        None, doc="null: devices, URLs and pipelines are live (reopened on stalls), files are not"
    )
    width: int = bounded(0, 0, 16384, doc="requested frame width of a device (0: its default)")
    height: int = bounded(0, 0, 16384, doc="requested frame height of a device (0: its default)")
    fps: float | None = bounded(
        None,
        0.1,
        1000.0,
        doc="devices: requested rate; files: play at this rate (null: own rate); URLs: unused",
    )
    fourcc: str = bounded("", doc="requested device pixel format, e.g. MJPG or YUYV ('': default)")
    pixel_format: Literal["bgr8", "gray8"] = bounded("bgr8", doc="what the frames are sent as")
    unpaced: bool = bounded(False, doc="files: read as fast as possible, not at their frame rate")
    loop: bool = bounded(False, doc="files: start again at the end")
    open_timeout_s: float = bounded(5.0, 0.1, 300.0, doc="give up opening after this long")
    read_timeout_s: float = bounded(
        2.0, 0.1, 300.0, doc="live: no frame for this long is a stall (the input is reopened)"
    )
    reconnect: bool = bounded(True, doc="live: reopen a stalled input (else the stage fails)")
    backoff_s: float = bounded(0.25, 0.01, 60.0, doc="first delay between reopen attempts")
    backoff_max_s: float = bounded(8.0, 0.01, 600.0, doc="longest delay between reopen attempts")
    gap_ms: float | None = bounded(
        None,
        1.0,
        600000.0,
        doc="live: frames further apart count as a gap (null: 3 periods, >= 100)",
    )
    pixel_spacing_mm: list[float] | None = bounded(
        None, doc="[row_mm, col_mm] of a calibrated image (e.g. an ultrasound capture card)"
    )
    orientation: list[str] | None = bounded(
        None, doc="patient directions of increasing column and row, e.g. [L, P]"
    )

    def validate(self, where: str) -> None:
        if isinstance(self.input, str) and not self.input.strip():
            raise ConfigError(f"{where}.input: expected a device, file, URL or pipeline, got ''")
        if isinstance(self.input, int) and self.input < 0:
            raise ConfigError(f"{where}.input: a device index must be >= 0, got {self.input}")
        if self.fourcc and (len(self.fourcc) != 4 or not self.fourcc.isascii()):
            raise ConfigError(f"{where}.fourcc: expected 4 ASCII characters, got {self.fourcc!r}")
        validate_geometry_fields(self, where)


@dataclass(frozen=True)
class Target:
    """What `CaptureSpec.input` names, classified."""

    kind: Literal["device", "file", "url", "pipeline"]
    arg: int | str  # what cv2.VideoCapture opens
    label: str  # how errors name it


def classify(value: int | str) -> Target:
    """Tell a device, a file, a URL and a GStreamer pipeline apart."""
    if isinstance(value, int):
        return Target("device", value, f"device {value}")
    text = value.strip()
    if text.isdigit():
        return Target("device", int(text), f"device {text}")
    if text.startswith("/dev/"):
        return Target("device", text, text)
    if text.startswith("file://"):
        path = text[len("file://") :]
        return Target("file", path, path)
    if _URL.match(text):
        return Target("url", text, text)
    if "!" in text:
        return Target("pipeline", text, f"GStreamer pipeline {text[:60]!r}")
    return Target("file", text, text)


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Hide OpenCV's warnings while opening: the source reports failures in one line."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _backend(spec: CaptureSpec, target: Target) -> int:
    if spec.backend != "auto":
        return BACKENDS[spec.backend]
    if target.kind == "pipeline":
        return cv2.CAP_GSTREAMER
    if target.kind in ("file", "url"):
        return cv2.CAP_FFMPEG
    return cv2.CAP_ANY


def _file_problem(path: str) -> str | None:
    p = Path(path)
    if not p.exists():
        return "no such file"
    if p.is_dir():
        return "is a directory, not a video file (use type: folder for images)"
    try:
        with p.open("rb") as f:
            f.read(1)
    except OSError as e:
        return e.strerror or str(e)
    return None


def _network_problem(url: str, timeout_s: float) -> str:
    """Why a URL did not open, as far as a TCP connect can tell."""
    parts = urlsplit(url)
    host = parts.hostname
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return "the URL has an invalid port"
    if not host or port is None:
        return "no video stream could be opened (unsupported URL or scheme)"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror:
        return f"cannot resolve host {host!r}"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e.strerror or e}"
    return f"{host}:{port} answered but no video stream opened (wrong path, or not a video)"


class CaptureSource:
    """Frames from `cv2.VideoCapture` (see the module doc)."""

    def __init__(self, spec: CaptureSpec) -> None:
        # FFmpeg's own log lines would repeat what this source says in one line. OpenCV reads
        # this once, when it first loads FFmpeg (in a grab stage: here); the user's value wins.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
        self.spec = spec
        self.target = classify(spec.input)
        self.live = spec.live if spec.live is not None else self.target.kind != "file"
        self.self_paced = self.live or spec.unpaced
        self.should_stop = never_stop
        self.frames_read = 0
        self._meta = geometry_meta(spec.pixel_spacing_mm, spec.orientation)
        self._events: list[SourceEvent] = []
        self._counts: Counter[str] = Counter()
        self._pending: np.ndarray | None = None  # files: the first frame, read at open
        self._file_next = 1  # files: the index of the frame the next cap.read() returns
        self._damage_said: set[int] = set()  # files: where undecodable frames were said
        self._lock = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._newest: np.ndarray | None = None
        self._failure: str | None = None  # live, reconnect off: why the input ended
        self._cap = self._open()
        first = self._read_first()
        self.fps: float | None = self._rate()
        if self.live:
            self._put(first)
            self._thread = threading.Thread(
                target=self._run_live, name="capture-reader", daemon=True
            )
            self._thread.start()
        else:
            self._pending = first

    # -- opening ---------------------------------------------------------------------------
    def _error(self, why: str) -> SourceError:
        return SourceError(f"capture source: cannot open {self.target.label}: {one_line(why)}")

    def _params(self) -> list[int]:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.spec.open_timeout_s * 1000)]
        if self.live:
            params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.spec.read_timeout_s * 1000)]
        return params

    def _try_open(self) -> cv2.VideoCapture | None:
        api = _backend(self.spec, self.target)
        try:
            with _quiet_opencv():
                cap = cv2.VideoCapture(self.target.arg, api, self._params())
        except cv2.error:
            return None
        if not cap.isOpened():
            cap.release()
            return None
        if self.target.kind == "device":
            self._configure_device(cap)
        return cap

    def _configure_device(self, cap: cv2.VideoCapture) -> None:
        spec = self.spec
        if spec.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*spec.fourcc))  # type: ignore[attr-defined]  # in cv2, not in its stub
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, spec.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, spec.height),
            (cv2.CAP_PROP_FPS, spec.fps or 0),
        ):
            if value:
                cap.set(prop, float(value))

    def _open(self) -> cv2.VideoCapture:
        target = self.target
        if target.kind == "file":
            problem = _file_problem(str(target.arg))
            if problem:
                raise self._error(problem)
        if target.kind == "pipeline" and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise self._error("this OpenCV build has no GStreamer support")
        cap = self._try_open()
        if cap is not None:
            return cap
        if target.kind == "url":
            raise self._error(_network_problem(str(target.arg), min(self.spec.open_timeout_s, 2.0)))
        if target.kind == "file":
            raise self._error("OpenCV cannot decode it (not a video, or an unsupported codec)")
        if target.kind == "device" and isinstance(target.arg, int):
            if not Path(f"/dev/video{target.arg}").exists() and Path("/dev").is_dir():
                raise self._error(f"no such device (/dev/video{target.arg} does not exist)")
        raise self._error("OpenCV could not open it (missing, busy, or not a video source)")

    def _read_first(self) -> np.ndarray:
        ok, image = self._cap.read()
        if not ok or image is None:
            self._cap.release()
            raise self._error("it opened but no frame could be read")
        self._check_requested(image)
        return self._convert(image)

    def _check_requested(self, image: np.ndarray) -> None:
        spec = self.spec
        h, w = image.shape[:2]
        if (spec.width and spec.width != w) or (spec.height and spec.height != h):
            self._event(
                f"capture source {self.target.label}: asked for {spec.width or w}x"
                f"{spec.height or h}, the input delivers {w}x{h}",
                {},
                "info",
            )

    def _rate(self) -> float | None:
        if not self.live and self.spec.fps:
            return self.spec.fps
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            if not self.live and not self.spec.unpaced:
                self._event(
                    f"capture source {self.target.label}: the file states no frame rate; "
                    "the grab stage's rate applies",
                    {},
                    "info",
                )
            return None
        return float(fps)

    # -- frames ----------------------------------------------------------------------------
    def _convert(self, image: np.ndarray) -> np.ndarray:
        gray = self.spec.pixel_format == "gray8"
        if image.ndim == 2 and not gray:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        if gray and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if image.dtype != np.uint8:
            raise SourceError(
                f"capture source {self.target.label}: frames of {image.dtype} are not supported"
            )
        return image

    def _capture(self, image: np.ndarray) -> Capture:
        self.frames_read += 1
        return Capture(image, self.spec.pixel_format, meta=dict(self._meta))

    def read(self) -> Capture | None:
        if self._closed:
            raise SourceError(f"capture source {self.target.label}: read() after close()")
        if self.live:
            return self._read_live()
        if self._pending is not None:
            first, self._pending = self._pending, None
            return self._capture(first)
        image: cv2.typing.MatLike | None
        ok, image = self._cap.read()
        if not ok:
            ok, image = self._past_damage()
        if not ok and self.spec.loop and self.frames_read:
            self._event(f"capture source {self.target.label}: looping", {"source_loops": 1}, "info")
            self._cap.release()
            self._cap = self._open()
            self._file_next = 0
            ok, image = self._cap.read()
        if not ok or image is None:
            return None
        self._file_next += 1
        return self._capture(self._convert(image))

    def _past_damage(self) -> tuple[bool, cv2.typing.MatLike | None]:
        """A file that stops decoding before the last frame it states (a damaged stretch): seek
        past it, up to MAX_DAMAGED_FRAMES frames on. The frames passed over are counted
        (`source_damaged`) and said (once per place, when looping); a stretch that does not end
        is said, not taken for the file's end."""
        total, at = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)), self._file_next
        where = f"capture source {self.target.label}"
        first_time = at not in self._damage_said
        self._damage_said.add(at)
        for nxt in range(at + 1, min(total, at + 1 + MAX_DAMAGED_FRAMES)):
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, nxt)
            ok, image = self._cap.read()
            if ok and image is not None:
                self._file_next = nxt  # read() counts the frame it hands on
                frames = f"frame {at}" if nxt == at + 1 else f"frames {at}-{nxt - 1}"
                why = f"{where}: {frames} of {total} undecodable (a damaged file?): skipped"
                self._event(why if first_time else "", {"source_damaged": nxt - at})
                return True, image
        if at < total:
            last = min(total, at + 1 + MAX_DAMAGED_FRAMES) - 1
            why = (
                f"{where}: frames {at}-{last} of the {total} the file states undecodable: taken "
                f"to end at frame {at}, {total - at} not shown (a damaged or cut file?)"
            )
            self._event(why if first_time else "", {"source_damaged": total - at})
        return False, None

    # -- live ------------------------------------------------------------------------------
    def _event(self, message: str, counts: dict[str, int], level: str = "warning") -> None:
        with self._lock:
            self._events.append(SourceEvent(message, counts, level))

    def pop_events(self) -> list[SourceEvent]:
        with self._lock:
            events, self._events = self._events, []
            if self._counts:
                events.append(SourceEvent("", dict(self._counts)))
                self._counts.clear()
        return events

    def _put(self, image: np.ndarray) -> None:
        with self._lock:
            if self._newest is not None:  # the grab stage was slower than the input
                self._counts["source_replaced"] += 1
            self._newest = image
            self._lock.notify_all()

    def _read_live(self) -> Capture | None:
        with self._lock:
            while self._newest is None:
                if self._failure is not None:
                    raise SourceError(self._failure)
                if self.should_stop() or self._closed:
                    return None
                self._lock.wait(WAIT_SLICE_S)
            image, self._newest = self._newest, None
        return self._capture(image)

    def _gap_ms(self) -> float:
        if self.spec.gap_ms is not None:
            return self.spec.gap_ms
        if not self.fps:
            return 1000.0  # rate unknown: only a long silence is a gap
        return max(3 * 1000.0 / self.fps, 100.0)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless closed; False if closed."""
        with self._lock:
            self._lock.wait_for(lambda: self._closed, seconds)
            return not self._closed

    def _reopen(self, why: str) -> cv2.VideoCapture | None:
        """Reopen with backoff until it works or the source closes; None if closed."""
        label = self.target.label
        if not self.spec.reconnect:
            with self._lock:
                self._failure = f"capture source {label}: {why}; reconnect is off"
                self._lock.notify_all()
            return None
        self._event(f"capture source {label}: {why}; reopening", {"source_stalls": 1})
        delay = self.spec.backoff_s
        attempts = 0
        while not self._closed:
            attempts += 1
            cap = self._try_open()
            if cap is not None:
                self._event(
                    f"capture source {label}: reopened after {attempts} attempt(s)",
                    {"source_reopens": 1, "source_reopen_attempts": attempts},
                    "info",
                )
                return cap
            if not self._sleep(delay):
                return None
            delay = min(delay * 2, self.spec.backoff_max_s)
        return None

    def _run_live(self) -> None:
        cap: cv2.VideoCapture | None = self._cap
        last = time.monotonic()
        gap_s = self._gap_ms() / 1000.0
        try:
            while not self._closed and cap is not None:
                ok, image = cap.read()
                if self._closed:
                    return
                if not ok or image is None:
                    cap.release()
                    silent_ms = (time.monotonic() - last) * 1000
                    cap = self._reopen(f"stalled (no frame for {silent_ms:.0f} ms)")
                    continue
                now = time.monotonic()
                if now - last > gap_s:
                    gap_ms = round((now - last) * 1000)
                    self._event(
                        f"capture source {self.target.label}: frames resumed after a "
                        f"{gap_ms} ms gap",
                        {"source_gaps": 1, "source_gap_ms": gap_ms},
                    )
                last = now
                try:
                    self._put(self._convert(image))
                except SourceError as e:
                    with self._lock:
                        self._failure = str(e)
                        self._lock.notify_all()
                    return
        finally:
            if cap is not None:
                cap.release()

    def close(self) -> None:
        """Stop the reader thread (bounded by the read timeout) and release the input."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(self.spec.read_timeout_s + self.spec.open_timeout_s + 1.0)
        else:
            self._cap.release()
