"""The infer stage: frame in -> budget check -> preprocess/engine/postprocess -> annotated frame out.

The image travels on unchanged (zero-copy); the model's label map is added as the `mask` part
(pixels below the card's confidence threshold already background), its per-pixel confidence as
the `confidence` part (not while every reader of the output is a labels-only render stage:
`confidence_part`), its boxes, labels and top-k classes as annotations; `meta.applicability` carries the
card's out-of-distribution gate for the frame and `meta.model_card` what the user must be told
(intended use, training data, notice). The stage appends its span to the frame's trace.
With a `tracker:` section, each model run's boxes also get track ids (stream.tracking) in
`annotations.track_ids`, the tracker timed by the frames' capture times; a tracked box's label
is its track's class vote over `label_window` detections (stream.tracking.TrackLabels).
Temporal skipping and the fallback cascade (infer_schedule.py) may reuse the last result for a
frame instead: `meta.inference` then says so, with the result's age and source frame.
Frames of several streams are scheduled per stream (a result is only ever reused for its own
stream) and, with `batch.max_batch > 1`, run several at once: one batched model call
(`run_batch` of the pipeline where it has one, else one call per frame), results split back.
Boxes a detector found beyond its `max_boxes` are counted (`boxes_cut`, per model run, per
stream) and logged the first time in the run, never dropped silently.
"""

from __future__ import annotations

import dataclasses

from engines import EngineUnavailable, InferencePipeline, InferenceResult, load_pipeline

from ..budget import WILL_MISS, BudgetGuard
from ..config import InferSpec, PipelineConfig, RenderSpec
from ..frame import Annotations, Frame
from ..tracking import BoxTracker, TrackLabels, make_tracker
from .base import Drop, StageRuntime
from .batcher import Batcher
from .infer_schedule import FALLBACK, MAIN, Decision, InferSchedule
from .loop import Operator, Ports, SetupError, run_operator, wait_for_consumers

RESULT_PARTS = ("mask", "confidence", "output")  # what a model adds to a frame
RESULT_META = ("applicability", "model_card")


def _derived(frame: Frame, parts: dict, annotations: Annotations, meta: dict) -> Frame:
    """The outgoing frame: `frame`'s identity, image (zero-copy) and trace, with new results."""
    return dataclasses.replace(
        frame, parts=parts, annotations=annotations, trace=list(frame.trace), meta=meta
    )


def annotate_frame(frame: Frame, pipeline: InferencePipeline) -> Frame:
    """Run the model on `frame` and return the outgoing frame (input left untouched)."""
    return _annotated(frame, pipeline, pipeline(frame.image, frame.pixel_format), True)


def model_results(frames: list[Frame], pipeline: InferencePipeline) -> list[InferenceResult]:
    """The model's results for `frames`, in order: one batched call where the pipeline can
    (its `run_batch`), else frame by frame."""
    run_batch = getattr(pipeline, "run_batch", None)
    if run_batch is None or len(frames) == 1:
        return [pipeline(f.image, f.pixel_format) for f in frames]
    return run_batch([f.image for f in frames], [f.pixel_format for f in frames])


def confidence_read(cfg: PipelineConfig, link: str) -> bool:
    """Whether a reader of `link` may use the `confidence` part: any reader but a render stage
    that draws labels only, and a reader not in `cfg` (no stage of `cfg` reads `link`)."""
    readers = cfg.readers(link)
    return not readers or any(
        not isinstance(s, RenderSpec) or s.overlay != "labels" for s in readers
    )


def _annotated(
    frame: Frame, pipeline: InferencePipeline, result: InferenceResult, confidence: bool
) -> Frame:
    """The outgoing frame for `frame` with the model's `result` (`confidence`: its part too)."""
    parts = dict(frame.parts)
    if result.mask is not None:
        parts["mask"] = result.mask
        parts.pop("confidence", None)  # an earlier model's, if any
    if confidence and result.confidence is not None:
        parts["confidence"] = result.confidence
    if result.image is not None:
        parts["output"] = result.image
    annotations = Annotations(
        model=pipeline.model_id,
        labels=list(pipeline.labels),
        boxes=result.boxes,  # the result's own list, made for this frame
        backend=pipeline.backend,
        device=pipeline.device,
        precision=pipeline.precision,
        classes=list(result.classes),
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
    parts = {**frame.parts, **{k: last.parts[k] for k in RESULT_PARTS if k in last.parts}}
    meta = {**frame.meta, **{k: last.meta[k] for k in RESULT_META if k in last.meta}}
    meta["inference"] = {
        "reused": True,
        "reason": reason,
        "result_seq": last.seq,
        "age_ms": round((frame.capture_ns - last.capture_ns) / 1e6, 3),
        "model": last.annotations.model,
    }
    return _derived(frame, parts, last.annotations, meta)


class InferOperator(Operator):
    """Frames in, model results out; `InferSchedule` is the strategy that says, per frame,
    whether to run a model (main or fallback), reuse the last result, or drop."""

    schedules_misses = True  # a predicted miss may reuse the last result (auto_skip)
    frame_errors = (Exception,)  # a frame the model cannot take is counted, not fatal
    times_itself = True  # only a run of the active model feeds the guard (not reuse, not probes)

    def __init__(
        self,
        rt: StageRuntime,
        spec: InferSpec,
        pipeline: InferencePipeline | None = None,
        fallback: InferencePipeline | None = None,
    ):
        self.rt, self.spec = rt, spec
        self.pipeline, self.fallback = pipeline, fallback
        self.schedules: dict[str, InferSchedule] = {}  # per stream
        self.guard = BudgetGuard(predict=spec.predict_drops, stage_budget_ms=spec.stage_budget_ms)
        self.last_out: dict[str, Frame] = {}  # per stream: its last computed result
        self.trackers: dict[str, BoxTracker] = {}  # per stream (`tracker:`), made on first use
        self.spare_tracker: BoxTracker | None = None  # built at setup: the first stream's
        self.confidence = True  # send the `confidence` part (setup: False while none reads it)
        self.track_labels: dict[str, TrackLabels] = {}  # per stream, beside its tracker
        self.cut_logged = False  # boxes cut by max_boxes: logged once per run
        if spec.batch.max_batch > 1:
            self.batcher = Batcher(spec.batch.max_batch, spec.batch.max_wait_ms)

    def schedule(self, stream: str) -> InferSchedule:
        got = self.schedules.get(stream)
        if got is None:
            spec = self.spec
            got = self.schedules[stream] = InferSchedule(
                run_every=spec.run_every,
                auto_skip=spec.auto_skip,
                max_reuse_age_ms=spec.max_reuse_age_ms,
                cascade=spec.fallback is not None,
                fallback_after=spec.fallback_after,
                probe_every=spec.probe_every,
            )
        return got

    def setup(self, ports: Ports) -> None:
        rt, spec = self.rt, self.spec
        try:
            self.pipeline = self.pipeline or load_pipeline(spec.engine)
            if spec.fallback is not None and self.fallback is None:
                self.fallback = load_pipeline(spec.fallback)
        except (EngineUnavailable, FileNotFoundError, ValueError) as e:
            raise SetupError(f"cannot load engine: {e}") from e
        if spec.tracker is not None:
            try:
                self.spare_tracker = make_tracker(spec.tracker)  # fails early, then kept
            except (ImportError, ValueError) as e:
                raise SetupError(str(e)) from e
            rt.stats.info["tracker"] = spec.tracker.type
        pipeline = self.pipeline
        self.models = {MAIN: pipeline, FALLBACK: self.fallback or pipeline}
        if self.fallback is not None:
            rt.stats.info["fallback_model"] = self.fallback.model_id
        self.confidence = spec.confidence_part == "always" or confidence_read(rt.cfg, spec.output)
        for model in (pipeline, self.fallback):
            if model is not None:
                model.confidence = self.confidence  # no map made for no reader
        if not self.confidence:
            rt.log.info("confidence part not sent: the render stages on %s draw labels only", spec.output)
        engine = {
            "model": pipeline.model_id,
            "backend": pipeline.backend,
            "device": pipeline.device,
            "precision": pipeline.precision,
            "engine_selection": getattr(pipeline, "selection", ""),
        }
        rt.stats.info.update(engine)
        rt.log.info(
            "model %(model)s on %(backend)s (%(device)s, %(precision)s): %(engine_selection)s",
            engine,
        )
        # subscribe upstream only once downstream listens, so no frame is processed for nobody
        sender = ports.add_output(spec.output)
        wait_for_consumers(rt, sender, spec.output, spec.wait_for_consumers, spec.wait_timeout_s)
        streams = rt.cfg.streams_into(spec.input)
        ports.add_input(spec.input, streams)
        if self.batcher is not None and streams:  # one frame per stream and batch: no more
            self.batcher.max_batch = min(self.batcher.max_batch, len(streams))
            if self.batcher.max_batch == 1:
                rt.log.info("batch: one stream comes in, so frames run one at a time")
                self.batcher = None
        if self.batcher is not None:
            rt.stats.info["max_batch"] = self.batcher.max_batch

    def _decide(self, frame: Frame, predicted_miss: bool) -> tuple[Decision, Frame | Drop | None]:
        """The schedule's decision for `frame` and, unless the model is to run, its result."""
        decision = self.schedule(frame.stream).decide(frame.capture_ns, predicted_miss=predicted_miss)
        if decision.switch:
            self._switched(decision.switch)
        if decision.action == "drop":
            return decision, Drop(WILL_MISS)
        if decision.action == "reuse":
            self.rt.stats.count(f"reused_{decision.reason}")
            return decision, reuse_result(frame, self.last_out[frame.stream], decision.reason)
        return decision, None

    def _ran(
        self, frame: Frame, out: Frame, decision: Decision, end: int, stage_ms: float, cut: int
    ) -> None:
        """Count and remember a model run's result (`cut`: boxes `max_boxes` cut from it);
        update the cascade."""
        stats = self.rt.stats
        out.meta["inference"] = {
            "reused": False, "model": self.models[decision.model].model_id, "age_ms": 0.0
        }
        if cut:
            self._boxes_cut(frame, decision.model, cut)
        if self.spec.tracker is not None:
            tracker = self.trackers.get(frame.stream)
            if tracker is None:
                tracker = self.spare_tracker or make_tracker(self.spec.tracker)
                self.trackers[frame.stream], self.spare_tracker = tracker, None
                self.track_labels[frame.stream] = TrackLabels(self.spec.tracker.label_window)
            ids = tracker.update(out.annotations.boxes, frame.capture_ns / 1e9)
            out.annotations.boxes = self.track_labels[frame.stream].update(
                out.annotations.boxes, ids, frame.capture_ns / 1e9
            )
            out.annotations.track_ids = ids
            stats.count("boxes_tracked", sum(1 for i in ids if i >= 0))
            stats.count("boxes_untracked", sum(1 for i in ids if i < 0))
        gate = out.meta.get("applicability")
        if gate is not None and not gate["applicable"]:
            stats.count("frames_not_applicable")
        if decision.model == FALLBACK:
            stats.count("fallback_frames")
        if decision.reason == "probe":
            stats.count("cascade_probes")
        budget = self.spec.stage_budget_ms
        missed = end > frame.deadline_ns or (budget is not None and stage_ms > budget)
        switch = self.schedule(frame.stream).record(
            decision.model, frame.seq, frame.capture_ns, out.annotations.model, missed
        )
        if switch:
            self._switched(switch)
        self.last_out[frame.stream] = out

    def process(self, frame: Frame, start_ns: int, predicted_miss: bool) -> Frame | Drop:
        decision, result = self._decide(frame, predicted_miss)
        if result is not None:
            return result
        model = self.models[decision.model]
        run = model(frame.image, frame.pixel_format)
        out = _annotated(frame, model, run, self.confidence)
        end = self.rt.clock.now_ns()
        stage_ms = (end - start_ns) / 1e6
        if decision.reason != "probe" and self.guard.record(stage_ms):  # the active model's
            self.rt.stats.count("stage_overruns")
        self._ran(frame, out, decision, end, stage_ms, run.boxes_cut)
        return out

    def process_batch(
        self, frames: list[Frame], start_ns: int, predicted_miss: list[bool]
    ) -> list[Frame | Drop]:
        """Decide per frame; run the frames for each model in one batched call."""
        results: list[Frame | Drop | None] = []
        decisions: list[Decision] = []
        for frame, miss in zip(frames, predicted_miss, strict=True):
            decision, result = self._decide(frame, miss)
            decisions.append(decision)
            results.append(result)
        timed = False
        for model in (MAIN, FALLBACK):
            todo = [i for i, r in enumerate(results) if r is None and decisions[i].model == model]
            if not todo:
                continue
            pipeline = self.models[model]
            runs = model_results([frames[i] for i in todo], pipeline)
            end = self.rt.clock.now_ns()
            stage_ms = (end - start_ns) / 1e6
            for i, run in zip(todo, runs, strict=True):
                out = _annotated(frames[i], pipeline, run, self.confidence)
                self._ran(frames[i], out, decisions[i], end, stage_ms, run.boxes_cut)
                results[i] = out
                timed = timed or decisions[i].reason != "probe"
        if timed:  # the batch's time: what the next batch's admission and wait reserve
            stage_ms = (self.rt.clock.now_ns() - start_ns) / 1e6
            if self.guard.record(stage_ms):
                self.rt.stats.count("stage_overruns")
        return [r for r in results if r is not None]

    def _boxes_cut(self, frame: Frame, model: str, n: int) -> None:
        """Count the `n` boxes `max_boxes` cut from `frame`'s result; log the first time."""
        self.rt.stats.count("boxes_cut", n, stream=frame.stream)
        if self.cut_logged:
            return
        self.cut_logged = True
        spec = self.spec.fallback if model == FALLBACK and self.spec.fallback else self.spec.engine
        self.rt.log.warning(
            "model %s found %d boxes more than max_boxes %d on frame %d of stream %s: the best "
            "%d are kept, the rest cut (counted as boxes_cut; logged once per run); raise the "
            "infer stage's engine.max_boxes (at most 4096) to keep more",
            self.models[model].model_id, n, spec.max_boxes, frame.seq, frame.stream, spec.max_boxes,
        )

    def _switched(self, switch: str) -> None:
        """Log and count a cascade switch; the guard's timings restart for the new model."""
        rt = self.rt
        target = self.models[FALLBACK if switch == "to_fallback" else MAIN]
        rt.stats.count("cascade_switches")
        rt.stats.count(f"cascade_{switch}")
        rt.stats.info["active_model"] = target.model_id
        self.guard.recent.clear()
        if switch == "to_fallback":
            rt.log.warning("budget missed: switching to the fallback model %s", target.model_id)
        else:
            rt.log.info("main model %s meets the budget again: switching back", target.model_id)

    def close(self) -> int:
        for model in (self.pipeline, self.fallback):
            if model is not None:
                model.close()
        return 0


def run_infer(
    rt: StageRuntime,
    spec: InferSpec,
    pipeline: InferencePipeline | None = None,
    fallback: InferencePipeline | None = None,
) -> int:
    return run_operator(rt, InferOperator(rt, spec, pipeline, fallback))
