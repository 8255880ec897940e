"""The infer stage: frame in -> budget check -> preprocess/engine/postprocess -> annotated frame out.

The image travels on unchanged (zero-copy); the model's label map is added as the `mask` part and
its boxes/labels as annotations, and the stage appends its span to the frame's trace.
"""

from __future__ import annotations

from engines import EngineUnavailable, InferencePipeline, load_pipeline

from ..budget import BudgetGuard
from ..codec import KIND_EOS
from ..config import InferSpec
from ..frame import Annotations, Box, Frame
from ..stats import STAGE_MS
from .base import StageRuntime

RECV_TIMEOUT_MS = 100


def annotate_frame(frame: Frame, pipeline: InferencePipeline) -> Frame:
    """Run the model on `frame` and return the outgoing frame (input left untouched)."""
    result = pipeline(frame.image, frame.pixel_format)
    parts = dict(frame.parts)
    if result.mask is not None:
        parts["mask"] = result.mask
    if result.image is not None:
        parts["output"] = result.image
    boxes = [Box(*map(float, b[:4]), int(b[4]), float(b[5])) for b in result.boxes]
    annotations = Annotations(
        model=pipeline.model_id,
        labels=list(pipeline.labels),
        boxes=boxes,
        backend=pipeline.backend,
        device=pipeline.device,
        precision=pipeline.precision,
    )
    return Frame(
        stream=frame.stream,
        seq=frame.seq,
        capture_ns=frame.capture_ns,
        deadline_ns=frame.deadline_ns,
        image=frame.image,
        pixel_format=frame.pixel_format,
        epoch=frame.epoch,
        parts=parts,
        annotations=annotations,
        trace=list(frame.trace),
        meta=dict(frame.meta),
    )


def run_infer(rt: StageRuntime, spec: InferSpec, pipeline: InferencePipeline | None = None) -> int:
    clock = rt.clock
    try:
        pipeline = pipeline or load_pipeline(spec.engine)
    except (EngineUnavailable, FileNotFoundError, ValueError) as e:
        rt.log.error("cannot load engine: %s", e)
        return 2
    rt.stats.info.update(
        {
            "model": pipeline.model_id,
            "backend": pipeline.backend,
            "device": pipeline.device,
            "precision": pipeline.precision,
            "engine_selection": getattr(pipeline, "selection", ""),
        }
    )
    rt.log.info(
        "model %s on %s (%s, %s): %s",
        pipeline.model_id,
        pipeline.backend,
        pipeline.device,
        pipeline.precision,
        getattr(pipeline, "selection", ""),
    )
    guard = BudgetGuard(predict=spec.predict_drops, stage_budget_ms=spec.stage_budget_ms)
    # subscribe upstream only once downstream listens, so no frame is processed for nobody
    sender = rt.sender(spec.output)
    if spec.wait_for_consumers and not sender.wait_for_consumers(
        spec.wait_for_consumers, spec.wait_timeout_s
    ):
        rt.log.warning(
            "no consumer on %s after %.0f s; starting anyway", spec.output, spec.wait_timeout_s
        )
    receiver = rt.receiver(spec.input)
    errors_logged: set[str] = set()
    try:
        while not rt.stop_requested:
            rt.tick()
            msg = receiver.recv(RECV_TIMEOUT_MS)
            if msg is None:
                continue
            if msg.kind == KIND_EOS:
                assert msg.eos is not None
                rt.log.info("end of stream %s after seq %d", msg.eos.stream, msg.eos.last_seq)
                sender.send_eos(msg.eos)
                break
            frame = msg.frame
            assert frame is not None
            start = clock.now_ns()
            reason = guard.check(frame, start)
            if reason is not None:
                rt.stats.drop(reason)
                continue
            try:
                out = annotate_frame(frame, pipeline)
            except Exception as e:  # a bad frame must not kill the stage: count it, say why once
                rt.stats.drop("error")
                key = type(e).__name__
                if key not in errors_logged:
                    errors_logged.add(key)
                    rt.log.error("frame %d dropped: %s: %s", frame.seq, key, e)
                continue
            end = clock.now_ns()
            stage_ms = (end - start) / 1e6
            if guard.record(stage_ms):
                rt.stats.count("stage_overruns")
            rt.stats.observe(STAGE_MS, stage_ms)
            out.with_span(rt.id, start, end)
            if sender.send(out):
                rt.stats.frame_out(clock.now_ns())
    finally:
        pipeline.close()
    return 0
