"""The grab stage: read a source at a set rate, stamp each frame, publish it.

Pacing is against an absolute schedule (t0 + i * period), so rate errors do not accumulate; a
source slower than the rate is never made to burst to catch up: the schedule restarts from now
and the frames it could not deliver in time are counted (`behind`). The send never blocks on a
live link, so a slow consumer can never stall the source.
"""

from __future__ import annotations

from ..codec import EndOfStream
from ..config import GrabSpec
from ..frame import Frame
from ..plugins import parse_source
from ..sources.base import Source, SourceError
from ..stats import STAGE_MS
from .base import StageRuntime, sleep_until

DEFAULT_FPS = 30.0


def run_grab(rt: StageRuntime, spec: GrabSpec, source: Source | None = None) -> int:
    """Run until stopped, the frame limit, or the end of a finite source. Returns exit code."""
    clock = rt.clock
    try:
        if source is None:
            source_spec, factory = parse_source(spec.source, f"{spec.id}.source")
            source = factory(source_spec)
    except SourceError as e:
        rt.log.error("%s", e)
        return 2
    fps = spec.fps or getattr(source, "fps", None) or DEFAULT_FPS
    period_ns = int(1e9 / fps)
    stream = spec.stream or spec.id
    epoch = clock.now_ns()  # a new epoch per start: consumers see a restarted producer
    sender = rt.sender(spec.output)
    rt.stats.info.update({"stream": stream, "fps_target": fps, "epoch": epoch})
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
    rt.log.info("streaming %s at %.1f fps to %s", stream, fps, rt.cfg.link(spec.output).endpoint)
    seq = 0
    t_next = clock.now_ns()
    exit_code = 0
    try:
        while not rt.stop_requested and (spec.frames == 0 or seq < spec.frames):
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
            if cap is None:
                rt.log.info("source ended after %d frames", seq)
                break
            capture_ns = clock.now_ns()
            frame = Frame(
                stream=stream,
                seq=seq,
                capture_ns=capture_ns,
                deadline_ns=capture_ns + rt.budget_ns,
                image=cap.image,
                pixel_format=cap.pixel_format,
                epoch=epoch,
                parts=cap.parts,
                meta=cap.meta,
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
            t_next += period_ns
            now = clock.now_ns()
            if now - t_next > period_ns:  # fell more than a frame behind: do not burst
                rt.stats.count("behind", (now - t_next) // period_ns)
                t_next = now
            rt.tick()
    finally:
        sender.send_eos(EndOfStream(stream, epoch, seq - 1))
        source.close()
    rt.log.info("stopped after %d frames", seq)
    return exit_code
