"""The grab stage: read a source at a set rate, stamp each frame, publish it.

Pacing is against an absolute schedule (t0 + i * period), so rate errors do not accumulate; a
source slower than the rate is never made to burst to catch up: the schedule restarts from now
and the frames it could not deliver in time are counted (`behind`). The send never blocks on a
live link, so a slow consumer can never stall the source.

The rate is the stage's `fps`, else the source's own `fps`, else 30. A self-paced source (a live
device, a replay at its recorded timing, a file read as fast as possible: see
`stream.sources.base.Source`) is not paced unless the stage's `fps` is set. Events a source
reports (stalls, reopens, gaps) are logged and added to the stage's counters. Every frame's
`meta["source_fps"]` carries the rate it is paced at (or a self-paced source's own rate, where it
knows one), so file sinks downstream write the stream at its own rate. A source built
from the config is wrapped in `RoiSource`, which puts the imaging region (`roi:`) into every
frame's meta; a source passed in is used as it is.
"""

from __future__ import annotations

import math

from ..codec import EndOfStream
from ..config import GrabSpec
from ..frame import Frame
from ..roi.setting import parse_roi_setting
from ..roi.source import RoiSource
from ..sources.base import Source, SourceError, SourceEvent
from .base import StageRuntime, sleep_until
from .loop import Ports, SetupError, run_source, wait_for_consumers

DEFAULT_FPS = 30.0


def _report(rt: StageRuntime, source: Source) -> None:
    """Log and count what the source says happened since the last read."""
    pop = getattr(source, "pop_events", None)
    events: list[SourceEvent] = pop() if pop is not None else []
    for ev in events:
        if ev.message:
            (rt.log.info if ev.level == "info" else rt.log.warning)("%s", ev.message)
        for name, n in ev.counts.items():
            rt.stats.count(name, n)


class GrabSource:
    """The grab stage as a source adapter: opens the source, paces it and stamps each frame."""

    def __init__(self, rt: StageRuntime, spec: GrabSpec, source: Source | None = None):
        self.rt, self.spec, self.source = rt, spec, source
        self.exit_code = 0
        self.seq = 0
        self.stream = spec.stream or spec.id
        self.epoch = rt.clock.now_ns()  # a new epoch per start: consumers see a restarted producer
        self.budget_ns = rt.budget_ns if spec.budget_ms is None else int(spec.budget_ms * 1e6)

    def setup(self, ports: Ports) -> None:
        rt, spec = self.rt, self.spec
        try:
            if self.source is None:
                roi = parse_roi_setting(spec.roi, f"{spec.id}.roi")
                self.source = RoiSource(spec.typed_source(spec.id).open(), roi, spec.id)
        except SourceError as e:
            raise SetupError(str(e)) from e
        source = self.source
        self.self_paced = spec.fps is None and bool(getattr(source, "self_paced", False))
        if hasattr(source, "should_stop"):
            source.should_stop = rt.should_stop  # type: ignore[attr-defined]
        own = getattr(source, "fps", None)  # a source's own rate; nan, 0 or junk: unknown
        ok = isinstance(own, (int, float)) and math.isfinite(own) and own > 0
        own_fps = float(own) if ok else None  # type: ignore[arg-type]
        fps = spec.fps or own_fps or DEFAULT_FPS
        self.period_ns = int(1e9 / fps)
        source_fps = fps if not self.self_paced else own_fps
        self.rate_meta = {"source_fps": source_fps} if source_fps is not None else {}
        sender = ports.add_output(spec.output)
        rt.stats.info.update(
            {
                "stream": self.stream,
                "fps_target": None if self.self_paced else fps,
                "epoch": self.epoch,
                "budget_ms": self.budget_ns / 1e6,
            }
        )
        _report(rt, source)
        wait_for_consumers(rt, sender, spec.output, spec.wait_for_consumers, spec.wait_timeout_s)
        rate = "the source's own pace" if self.self_paced else f"{fps:.1f} fps"
        rt.log.info("streaming %s at %s to %s", self.stream, rate, rt.cfg.link(spec.output).endpoint)
        self.t_next = rt.clock.now_ns()

    def read(self) -> tuple[Frame, int] | None:
        rt, clock, source = self.rt, self.rt.clock, self.source
        assert source is not None
        if self.seq and not self.self_paced:  # the schedule for the next frame
            self.t_next += self.period_ns
            now = clock.now_ns()
            if now - self.t_next > self.period_ns:  # fell more than a frame behind: no burst
                rt.stats.count("behind", (now - self.t_next) // self.period_ns)
                self.t_next = now
        if self.spec.frames and self.seq >= self.spec.frames:
            return None
        if not self.self_paced:
            sleep_until(clock, self.t_next, rt)
        if rt.stop_requested:
            return None
        start = clock.now_ns()
        try:
            cap = source.read()
        except SourceError as e:
            rt.log.error("%s", e)
            self.exit_code = 2
            return None
        finally:
            _report(rt, source)
        if cap is None:
            if not rt.stop_requested:
                rt.log.info("source ended after %d frames", self.seq)
            return None
        capture_ns = clock.now_ns()
        if self.self_paced:  # read() waited for the frame to be due: that wait is not work
            start = capture_ns
        frame = Frame(
            stream=self.stream,
            seq=self.seq,
            capture_ns=capture_ns,
            deadline_ns=capture_ns + self.budget_ns,
            image=cap.image,
            pixel_format=cap.pixel_format,
            epoch=self.epoch,
            parts=cap.parts,
            annotations=cap.annotations,
            meta={**cap.meta, **self.rate_meta},
        )
        self.seq += 1
        return frame, start

    def eos(self) -> EndOfStream:
        return EndOfStream(self.stream, self.epoch, self.seq - 1)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        self.rt.log.info("stopped after %d frames", self.seq)


def run_grab(rt: StageRuntime, spec: GrabSpec, source: Source | None = None) -> int:
    """Run until stopped, the frame limit, or the end of a finite source. Returns exit code."""
    return run_source(rt, GrabSource(rt, spec, source))
