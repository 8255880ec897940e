"""The infer stage: frame in -> budget check -> preprocess/engine/postprocess -> annotated frame out.

The image travels on unchanged (zero-copy); the model's label map is added as the `mask` part
(pixels below the card's confidence threshold already background), its per-pixel confidence as
the `confidence` part, its boxes/labels as annotations; `meta.applicability` carries the
card's out-of-distribution gate for the frame and `meta.model_card` what the user must be told
(intended use, training data, notice). The stage appends its span to the frame's trace.
Temporal skipping and the fallback cascade (infer_schedule.py) may reuse the last result for a
frame instead: `meta.inference` then says so, with the result's age and source frame.
"""

from __future__ import annotations

import dataclasses

from engines import EngineUnavailable, InferencePipeline, load_pipeline

from ..budget import LATE, WILL_MISS, BudgetGuard
from ..codec import KIND_EOS
from ..config import InferSpec
from ..exit_codes import EXIT_SETUP
from ..frame import Annotations, Box, Frame
from ..stats import STAGE_MS
from .base import StageRuntime
from .infer_schedule import FALLBACK, MAIN, InferSchedule

RECV_TIMEOUT_MS = 100
RESULT_PARTS = ("mask", "confidence", "output")  # what a model adds to a frame
RESULT_META = ("applicability", "model_card")


def _derived(frame: Frame, parts: dict, annotations: Annotations, meta: dict) -> Frame:
    """The outgoing frame: `frame`'s identity, image (zero-copy) and trace, with new results."""
    return dataclasses.replace(
        frame, parts=parts, annotations=annotations, trace=list(frame.trace), meta=meta
    )


def annotate_frame(frame: Frame, pipeline: InferencePipeline) -> Frame:
    """Run the model on `frame` and return the outgoing frame (input left untouched)."""
    result = pipeline(frame.image, frame.pixel_format)
    parts = dict(frame.parts)
    if result.mask is not None:
        parts["mask"] = result.mask
        parts.pop("confidence", None)  # an earlier model's, if any
    if result.confidence is not None:
        parts["confidence"] = result.confidence
    if result.image is not None:
        parts["output"] = result.image
    boxes = [
        Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(b[4]), float(b[5]))
        for b in result.boxes
    ]
    annotations = Annotations(
        model=pipeline.model_id,
        labels=list(pipeline.labels),
        boxes=boxes,
        backend=pipeline.backend,
        device=pipeline.device,
        precision=pipeline.precision,
    )
    meta = {k: v for k, v in frame.meta.items() if k not in RESULT_META}  # not an earlier model's
    if result.applicability is not None:
        meta["applicability"] = result.applicability
    info = getattr(pipeline, "card_info", None)
    if info and any(info.values()):
        meta["model_card"] = {k: v for k, v in info.items() if v}
    return _derived(frame, parts, annotations, meta)


def reuse_result(frame: Frame, last: Frame, reason: str) -> Frame:
    """`frame` with the results (mask, output image, annotations) computed for `last`."""
    parts = dict(frame.parts)
    for name in RESULT_PARTS:
        if name in last.parts:
            parts[name] = last.parts[name]
    meta = dict(frame.meta)
    for key in RESULT_META:
        if key in last.meta:
            meta[key] = last.meta[key]
    meta["inference"] = {
        "reused": True,
        "reason": reason,
        "result_seq": last.seq,
        "age_ms": round((frame.capture_ns - last.capture_ns) / 1e6, 3),
        "model": last.annotations.model,
    }
    return _derived(frame, parts, last.annotations, meta)


def _schedule(spec: InferSpec) -> InferSchedule:
    return InferSchedule(
        run_every=spec.run_every,
        auto_skip=spec.auto_skip,
        max_reuse_age_ms=spec.max_reuse_age_ms,
        cascade=spec.fallback is not None,
        fallback_after=spec.fallback_after,
        probe_every=spec.probe_every,
    )


def run_infer(
    rt: StageRuntime,
    spec: InferSpec,
    pipeline: InferencePipeline | None = None,
    fallback: InferencePipeline | None = None,
) -> int:
    clock = rt.clock
    try:
        pipeline = pipeline or load_pipeline(spec.engine)
        if spec.fallback is not None and fallback is None:
            fallback = load_pipeline(spec.fallback)
    except (EngineUnavailable, FileNotFoundError, ValueError) as e:
        rt.log.error("cannot load engine: %s", e)
        if pipeline is not None:
            pipeline.close()
        return EXIT_SETUP  # could not start: not restarted
    models = {MAIN: pipeline, FALLBACK: fallback or pipeline}
    schedule = _schedule(spec)
    if fallback is not None:
        rt.stats.info["fallback_model"] = fallback.model_id
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
    if (
        spec.wait_for_consumers
        and not sender.wait_for_consumers(spec.wait_for_consumers, spec.wait_timeout_s)
        and not rt.stop_requested  # the wait ended because the stage is being stopped
    ):
        rt.log.warning(
            "no consumer on %s after %.0f s; starting anyway", spec.output, spec.wait_timeout_s
        )
    receiver = rt.receiver(spec.input)
    errors_logged: set[str] = set()
    last_out: Frame | None = None
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
            if reason == LATE:
                rt.stats.drop(reason)
                rt.framelog.drop(frame, reason, start, start)
                continue
            decision = schedule.decide(frame.capture_ns, predicted_miss=reason == WILL_MISS)
            if decision.switch:
                _switched(rt, guard, decision.switch, models)
            if decision.action == "drop":
                rt.stats.drop(WILL_MISS)
                rt.framelog.drop(frame, WILL_MISS, start, start)
                continue
            if decision.action == "reuse":
                assert last_out is not None
                out = reuse_result(frame, last_out, decision.reason)
                rt.stats.count(f"reused_{decision.reason}")
            else:
                model = models[decision.model]
                try:
                    out = annotate_frame(frame, model)
                except Exception as e:  # a bad frame must not kill the stage: count it, say why once
                    rt.stats.drop("error")
                    rt.framelog.drop(frame, "error", start, clock.now_ns())
                    key = type(e).__name__
                    if key not in errors_logged:
                        errors_logged.add(key)
                        rt.log.error("frame %d dropped: %s: %s", frame.seq, key, e)
                    continue
                out.meta["inference"] = {"reused": False, "model": model.model_id, "age_ms": 0.0}
                gate = out.meta.get("applicability")
                if gate is not None and not gate["applicable"]:
                    rt.stats.count("frames_not_applicable")
                if decision.model == FALLBACK:
                    rt.stats.count("fallback_frames")
                if decision.reason == "probe":
                    rt.stats.count("cascade_probes")
            end = clock.now_ns()
            stage_ms = (end - start) / 1e6
            if decision.action == "run":
                missed = end > frame.deadline_ns or (
                    spec.stage_budget_ms is not None and stage_ms > spec.stage_budget_ms
                )
                if decision.reason != "probe":  # the guard predicts the model that is active
                    if guard.record(stage_ms):
                        rt.stats.count("stage_overruns")
                switch = schedule.record(
                    decision.model, frame.seq, frame.capture_ns, out.annotations.model, missed
                )
                if switch:
                    _switched(rt, guard, switch, models)
                last_out = out
            rt.stats.observe(STAGE_MS, stage_ms)
            out.with_span(rt.id, start, end)
            if sender.send(out):
                rt.stats.frame_out(clock.now_ns())
                rt.framelog.out(out, start, end)
            else:
                rt.framelog.drop(out, sender.last_drop, start, end)
    finally:
        pipeline.close()
        if fallback is not None:
            fallback.close()
    return 0


def _switched(
    rt: StageRuntime, guard: BudgetGuard, switch: str, models: dict[str, InferencePipeline]
) -> None:
    """Log and count a cascade switch; the guard's timings restart for the new model."""
    target = models[FALLBACK if switch == "to_fallback" else MAIN]
    rt.stats.count("cascade_switches")
    rt.stats.count(f"cascade_{switch}")
    rt.stats.info["active_model"] = target.model_id
    guard.recent.clear()
    if switch == "to_fallback":
        rt.log.warning("budget missed: switching to the fallback model %s", target.model_id)
    else:
        rt.log.info("main model %s meets the budget again: switching back", target.model_id)

