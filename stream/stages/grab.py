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
from ..exit_codes import EXIT_SETUP
from ..frame import Frame
from ..plugins import parse_source
from ..roi.setting import parse_roi_setting
from ..roi.source import RoiSource
from ..sources.base import Source, SourceError, SourceEvent
from ..stats import STAGE_MS
from .base import StageRuntime, sleep_until

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


def run_grab(rt: StageRuntime, spec: GrabSpec, source: Source | None = None) -> int:
    """Run until stopped, the frame limit, or the end of a finite source. Returns exit code."""
    clock = rt.clock
    try:
        if source is None:
            source_spec, factory = parse_source(spec.source, f"{spec.id}.source")
            source = factory(source_spec)
            source = RoiSource(source, parse_roi_setting(spec.roi, f"{spec.id}.roi"), spec.id)
    except SourceError as e:
        rt.log.error("%s", e)
        return EXIT_SETUP  # could not start: not restarted
    self_paced = spec.fps is None and bool(getattr(source, "self_paced", False))
    if hasattr(source, "should_stop"):
        source.should_stop = rt.should_stop  # type: ignore[attr-defined]
    own = getattr(source, "fps", None)  # a source's own rate; nan, 0 or junk: unknown
    own_fps = float(own) if isinstance(own, (int, float)) and math.isfinite(own) and own > 0 else None
    fps = spec.fps or own_fps or DEFAULT_FPS
    period_ns = int(1e9 / fps)
    source_fps = fps if not self_paced else own_fps
    rate_meta = {"source_fps": source_fps} if source_fps is not None else {}
    stream = spec.stream or spec.id
    epoch = clock.now_ns()  # a new epoch per start: consumers see a restarted producer
    sender = rt.sender(spec.output)
    rt.stats.info.update(
        {"stream": stream, "fps_target": None if self_paced else fps, "epoch": epoch}
    )
    _report(rt, source)
    if spec.wait_for_consumers and not sender.wait_for_consumers(
        spec.wait_for_consumers, spec.wait_timeout_s
    ):
        if rt.stop_requested:
            return 0
        rt.log.warning(
            "only %d of %d consumers after %.0f s; starting anyway (frames to nobody are counted)",
            sender.consumers,
            spec.wait_for_consumers,
            spec.wait_timeout_s,
        )
    rate = "the source's own pace" if self_paced else f"{fps:.1f} fps"
    rt.log.info("streaming %s at %s to %s", stream, rate, rt.cfg.link(spec.output).endpoint)
    seq = 0
    t_next = clock.now_ns()
    exit_code = 0
    try:
        while not rt.stop_requested and (spec.frames == 0 or seq < spec.frames):
            if not self_paced:
                sleep_until(clock, t_next, rt)
            if rt.stop_requested:
                break
            start = clock.now_ns()
            try:
                cap = source.read()
            except SourceError as e:
                rt.log.error("%s", e)
                exit_code = 2
                break
            finally:
                _report(rt, source)
            if cap is None:
                if not rt.stop_requested:
                    rt.log.info("source ended after %d frames", seq)
                break
            capture_ns = clock.now_ns()
            if self_paced:  # read() waited for the frame to be due: that wait is not work
                start = capture_ns
            frame = Frame(
                stream=stream,
                seq=seq,
                capture_ns=capture_ns,
                deadline_ns=capture_ns + rt.budget_ns,
                image=cap.image,
                pixel_format=cap.pixel_format,
                epoch=epoch,
                parts=cap.parts,
                annotations=cap.annotations,
                meta={**cap.meta, **rate_meta},
            )
            rt.stats.count("captured")
            frame.with_span(rt.id, start, capture_ns)
            sent = sender.send(frame)
            end = clock.now_ns()
            if sent:
                rt.stats.frame_out(end)
                rt.framelog.out(frame, start, end)
            else:
                rt.framelog.drop(frame, sender.last_drop, start, end)
            rt.stats.observe(STAGE_MS, (end - start) / 1e6)
            seq += 1
            rt.tick()
            if self_paced:
                continue
            t_next += period_ns
            now = clock.now_ns()
            if now - t_next > period_ns:  # fell more than a frame behind: do not burst
                rt.stats.count("behind", (now - t_next) // period_ns)
                t_next = now
    finally:
        sender.send_eos(EndOfStream(stream, epoch, seq - 1))
        source.close()
    rt.log.info("stopped after %d frames", seq)
    return exit_code
