"""The render stage: overlay + HUD on a copy of each frame, then hand it to the sinks.

synchronized: each frame arrives from the infer stage with its own mask and is drawn with it.
passthrough: raw frames arrive straight from the source at full rate; the newest overlay from
the infer stage is drawn only while it is at most `overlay_max_age_ms` older than the frame,
else the frame is shown without it under an "overlay stale" banner.

Where a frame's meta carries its pixel spacing, a scale bar in mm is drawn (a "spacing
unverified" note instead where the source doubts it); where it carries its patient orientation,
the direction letters (malformed values are counted as `bad_geometry_meta`). HUD, scale bar and
orientation each have a corner and an off switch. `show` picks the image drawn on: the input,
the model's output image (part `output`), or both side by side (stream.render.view).

Boxes are drawn with "name score" tags; a classifier's top-k labels are the HUD's last lines.
Tracked boxes (`annotations.track_ids`) read "#id name score", with a short trail of each id's
last `trail_length` centres (kept here, one point per result) and a tip marker at each centre;
with track ids, only one box per track is drawn (its best; boxes with no track, e.g. the
low-score ones kept for ByteTrack's second pass, are counted as `overlay_boxes_untracked`).
Model output is drawn only where `stream.render.overlay_policy` allows (inside the frame's
imaging region, not on colour-Doppler pixels, not when the model says it does not apply); every
frame with an overlay is counted as `overlay_shown` or `overlay_suppressed:<reason>` (and
`overlay_suppressed:stale` in passthrough), with the HUD saying why.

Glass-to-glass latency is measured from the frame's capture time to the moment the rendered
image is handed to the sinks. Where a frame carries the source's ground truth (`truth`) and the
overlay drawn on it has a `mask`, a confusion matrix accumulates, so accuracy is measured live.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import suppress
from typing import Any

import numpy as np

from ..budget import BudgetGuard
from ..clock import CLOCK_TOLERANCE_MS
from ..config import RenderSpec
from ..frame import Frame
from ..histogram import RecentHistogram
from ..overlay_summary import overlay_live
from ..plugins import Typed
from ..render.boxes import BoxAnnotator, LabelAnnotator
from ..render.canvas import check_canvas
from ..render.color import DETECTION_PALETTE
from ..render.explain import ModelExplainer
from ..render.hud import HudAnnotator, HudData
from ..render.mask import MaskAnnotator
from ..render.overlay_policy import ClippedOverlay, OverlayPolicy
from ..render.pieces import GeometryPieces
from ..render.tracks import TipAnnotator, TrackTrails, TrailAnnotator, tracked_boxes
from ..render.view import ImageView
from ..results_summary import count_results
from ..sinks.base import Sink, SinkError, sink_display_ms, sink_pending
from ..sinks.naming import sink_kind, unique_label
from ..stats import DISPLAY_MS, GLASS_MS, OVERLAY_AGE_MS
from .base import Drop, StageRuntime
from .loop import Delivered, Latest, Operator, Ports, SetupError, run_operator

STATS_PERIOD_S = 0.25
MAX_LABEL_VALUES = 256
GREY_FORMATS = ("gray8", "gray16", "float32")
OVERLAY_DROP_PREFIX = "overlay:"  # passthrough: overlays skipped are not video frames dropped
TOO_MANY_STREAMS = "too_many_streams"  # a frame of one stream more than a render stage draws


def overlay_age_ms(frame: Frame, overlay: Frame | None) -> float | None:
    """How much older than `frame` the result drawn on it is: a passthrough overlay from an
    earlier frame, or a result the infer stage reused (temporal skipping); None if current."""
    if overlay is None:
        return None
    if overlay is not frame:
        return max(0.0, (frame.capture_ns - overlay.capture_ns) / 1e6)
    reused = frame.meta.get("inference")
    if isinstance(reused, dict) and reused.get("reused"):
        age = reused.get("age_ms")
        if isinstance(age, (int, float)) and not isinstance(age, bool):
            return float(age)
    return None


class Renderer:
    """Draws one frame (with an optional overlay frame) and keeps the live figures for the HUD."""

    def __init__(self, rt: StageRuntime, spec: RenderSpec, sinks: list[Sink]):
        self.rt = rt
        self.spec = spec
        self.sinks = sinks
        self.mask = MaskAnnotator()
        self.boxes = BoxAnnotator(DETECTION_PALETTE)  # box label 0 is a class: not black
        self.labels = LabelAnnotator(DETECTION_PALETTE)
        self.trails = TrackTrails(spec.trail_length)
        self.trail_lines = TrailAnnotator(DETECTION_PALETTE)
        self.tips = TipAnnotator() if spec.tips else None
        self.last_tracked: tuple[int, int] | None = None  # (stream epoch, seq) of the last result
        self.pieces = GeometryPieces(
            spec.scale_bar, spec.scale_bar_corner, spec.orientation, spec.orientation_corner
        )
        self.view = ImageView(spec.show, rt.stats.count)
        self.hud = HudAnnotator(corner=spec.hud_corner) if spec.hud else None
        self.explain = ModelExplainer(spec.overlay)  # heat-map, legend, notice, card facts
        self.policy = OverlayPolicy()
        self.overlay_off = ""  # why the last frame's model output was not drawn ("" if it was)
        self.clipped = ClippedOverlay()
        self.recent = RecentHistogram()
        self.recent_display = RecentHistogram()
        self.handoffs: deque[int] = deque(maxlen=30)
        self.confusion = np.zeros((0, 0), np.int64)
        self.model = ""
        self.backend = ""
        self.next_stats = 0.0

    def fps(self) -> float | None:
        if len(self.handoffs) < 2 or self.handoffs[-1] == self.handoffs[0]:
            return None
        return (len(self.handoffs) - 1) / ((self.handoffs[-1] - self.handoffs[0]) / 1e9)

    def hud_data(
        self, frame: Frame, overlay: Frame | None, stale_ms: float | None, suppressed: str = ""
    ) -> HudData:
        stats = self.rt.stats
        classes: tuple[tuple[str, float], ...] = ()
        if overlay is not None and not suppressed:  # top-k shown where the overlay would be
            names = overlay.annotations.labels
            classes = tuple(
                (names[k] if 0 <= k < len(names) else str(k), p)
                for k, p in overlay.annotations.classes
            )
        p50, p99 = self.recent.percentiles((50, 99))
        return HudData(
            seq=frame.seq,
            fps=self.fps(),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            budget_ms=self.rt.cfg.budget_ms,
            budget_misses=stats.counters["budget_misses"],
            drops=sum(stats.drops.values()),
            model=self.model,
            backend=self.backend,
            overlay_stale_ms=stale_ms,
            overlay_age_ms=overlay_age_ms(frame, overlay),
            overlay_suppressed=suppressed,
            classes=classes,
        )

    def _accumulate_accuracy(self, truth: np.ndarray, mask: np.ndarray) -> None:
        if truth.shape != mask.shape:
            self.rt.stats.count("truth_shape_mismatch")
            return
        k = int(max(truth.max(initial=0), mask.max(initial=0))) + 1
        if k > MAX_LABEL_VALUES:
            return
        if k > self.confusion.shape[0]:  # grown with zeros for the new label values
            self.confusion = np.pad(self.confusion, (0, k - self.confusion.shape[0]))
        k = self.confusion.shape[0]
        pairs = truth.astype(np.int32).ravel() * k + mask.ravel()
        self.confusion += np.bincount(pairs, minlength=k * k).reshape(k, k)

    def render(self, frame: Frame, overlay: Frame | None, stale_ms: float | None) -> int:
        """Draw `frame` (with `overlay`'s annotations, if given) and hand it to every sink.
        Returns the time of the handoff."""
        canvas = self.draw(frame, overlay, stale_ms)
        handoff = self.rt.clock.now_ns()
        for sink in self.sinks:
            sink.write(canvas, frame)
        self.handed(frame, handoff)
        return handoff

    def draw(self, frame: Frame, overlay: Frame | None, stale_ms: float | None) -> np.ndarray:
        """`frame` drawn (with `overlay`'s annotations, if given) onto a new image."""
        rt = self.rt
        canvas = self.view.base(frame, overlay)  # a new array: the frame stays clean
        check_canvas(canvas)  # once per frame: the annotators below paint it unchecked
        suppressed = ""
        if overlay is not None:
            ann = overlay.annotations
            self.model, self.backend = ann.model or self.model, ann.backend or self.backend
            self.explain.note(overlay)
            self._note_tracks(overlay)
            mask = overlay.parts.get("mask")
            truth = frame.parts.get("truth")
            if mask is not None and truth is not None:
                self._accumulate_accuracy(truth, mask)
                rt.stats.info["labels"] = list(ann.labels)
            if mask is not None or ann.boxes or ann.classes:  # model output to draw (or withhold)
                suppressed = self._draw_output(canvas, frame, overlay)
            count_results(rt.stats, ann)
        elif stale_ms is not None:
            rt.stats.count("overlay_suppressed:stale")
        self.overlay_off = suppressed
        self._draw_geometry(canvas, frame)
        canvas = self.view.compose(canvas, frame, overlay, lambda c: self._output_geometry(c, frame))
        self.explain.draw_panels(canvas)
        if self.hud is not None:
            self.hud.paint(canvas, self.hud_data(frame, overlay, stale_ms, suppressed))
        return canvas

    def handed(self, frame: Frame, handoff: int) -> None:
        """`frame` (drawn) reached the sinks at `handoff`: glass-to-glass, budget, live stats."""
        glass_ms = (handoff - frame.capture_ns) / 1e6
        if glass_ms < -CLOCK_TOLERANCE_MS:  # rendered before captured: the clocks disagree
            self.rt.stats.count("clock_skew")
        else:
            self.rt.stats.observe(GLASS_MS, glass_ms, frame.stream)
        if handoff > frame.deadline_ns:
            self.rt.stats.count("budget_misses", stream=frame.stream)
        self.note_handoff(frame, handoff)
        self.publish_live()

    def note_handoff(self, frame: Frame, handoff: int) -> None:
        """The HUD's figures (fps, recent glass-to-glass) learn of a handoff."""
        glass_ms = (handoff - frame.capture_ns) / 1e6
        if glass_ms >= -CLOCK_TOLERANCE_MS:
            self.recent.record(glass_ms, handoff)
        self.handoffs.append(handoff)

    def takes(self, frame: Frame) -> bool:
        """Whether this renderer can draw `frame` (one of several streams may be one too many)."""
        return True

    def all_sinks(self) -> list[Sink]:
        """Every sink this renderer feeds (stats go to all of them)."""
        return self.sinks

    def _note_tracks(self, overlay: Frame) -> None:
        """Extend the trails with a result's tracked boxes, once per result (passthrough draws
        one result on many frames; a reused result is the earlier frame's, already noted)."""
        ann = overlay.annotations
        reused = overlay.meta.get("inference")
        source_seq = overlay.seq
        if isinstance(reused, dict) and reused.get("reused"):
            seq = reused.get("result_seq")
            source_seq = seq if isinstance(seq, int) else source_seq
        key = (overlay.epoch, source_seq)
        if key == self.last_tracked or (ann.boxes and not ann.track_ids):
            return  # already noted, or not tracked (a result with no boxes ages the trails)
        self.last_tracked = key
        self.trails.update(ann.boxes, ann.track_ids)

    def _draw_output(self, canvas: np.ndarray, frame: Frame, overlay: Frame) -> str:
        """Draw the model's mask and boxes where the overlay policy allows (imaging region,
        not colour pixels); count shown / suppressed frames. Returns the HUD's reason text."""
        decision = self.policy.decide(canvas, frame, overlay, frame.pixel_format in GREY_FORMATS)
        stats = self.rt.stats
        if not decision.shown:
            stats.count(f"overlay_suppressed:{decision.reason}")
            return decision.message
        stats.count("overlay_shown")
        ann = overlay.annotations
        mask = overlay.parts.get("mask")

        def draw(target: np.ndarray) -> None:
            if not self.explain.draw_confidence(target, overlay, decision.allowed):
                stats.count("bad_confidence_part")
            if mask is not None and self.explain.draws_labels:
                self.mask.paint(target, self.clipped.clip_labels(mask, decision.allowed))
            boxes, ids = ann.boxes, ann.track_ids
            if ids:  # tracked: one box per track (its best), boxes without a track not drawn
                boxes, ids = tracked_boxes(ann.boxes, ann.track_ids)
                stats.count("overlay_boxes_untracked", len(ann.boxes) - len(boxes))
            if boxes:
                self.boxes.paint(target, boxes)
                if ids:
                    self.trail_lines.paint(target, self.trails.trails())
                    if self.tips is not None:
                        self.tips.paint(target, boxes)
                self.labels.paint(target, boxes, ann.labels, ids)

        clipped, outside = self.clipped.draw(canvas, decision.allowed, draw)
        if clipped:
            stats.count("overlay_pixels_clipped", clipped)
        if outside:
            stats.count("overlay_pixels_outside_roi", outside)
        return ""

    def _draw_geometry(self, canvas: np.ndarray, frame: Frame) -> None:
        """Scale bar and orientation letters, where the frame says its geometry."""
        try:
            self.pieces.paint(canvas, frame.meta)
        except ValueError:
            self.rt.stats.count("bad_geometry_meta")

    def _output_geometry(self, canvas: np.ndarray, frame: Frame) -> None:
        """The same pieces on the side-by-side output half (a bad meta is counted once)."""
        with suppress(ValueError):
            self.pieces.paint(canvas, frame.meta)

    def publish_live(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_stats:
            return
        self.next_stats = now + STATS_PERIOD_S
        if self.confusion.size:  # for the stage's stats snapshots (and so the run report)
            self.rt.stats.info["confusion"] = self.confusion.tolist()
        self.take_display_latency()
        live = self.live_stats()
        for sink in self.all_sinks():
            sink.update_stats(live)

    def take_display_latency(self) -> None:
        """Capture -> shown times the sinks' viewers reported (display latency, in ms)."""
        for sink in self.all_sinks():
            for stream, ms in sink_display_ms(sink):  # per stream too where it is one we drew
                known = stream in self.rt.stats.streams  # (a composed image is no one stream)
                self.rt.stats.observe(DISPLAY_MS, ms, stream if known else None)
                self.recent_display.record(ms, self.rt.clock.now_ns())

    def live_stats(self) -> dict[str, Any]:
        stats = self.rt.stats
        fps = self.fps()
        return {
            "stage": self.rt.id,
            "mode": self.spec.mode,
            "fps": None if fps is None else round(fps, 1),
            "glass_to_glass_ms": _p50_p99(self.recent),
            "display_ms": _p50_p99(self.recent_display),
            "budget_ms": self.rt.cfg.budget_ms,
            "budget_misses": stats.counters["budget_misses"],
            "delivered": stats.counters["out"],
            "drops": dict(stats.drops),
            "model": self.model,
            "backend": self.backend,
            "model_card": self.explain.live(),
            "overlay": overlay_live(stats.counters, self.overlay_off),
        }


def _p50_p99(recent: RecentHistogram) -> dict[str, float | None]:
    """The recent p50 and p99 in ms to 0.1 (None while empty), for the live stats."""
    return {
        f"p{p}": None if v is None else round(v, 1)
        for p, v in zip((50, 99), recent.percentiles((50, 99)), strict=True)
    }


def _open_sinks(rt: StageRuntime, typed: list[Typed]) -> list[Sink]:
    sinks: list[Sink] = []
    try:
        for sink in typed:
            sinks.append(sink.open(rt.id))
    except SinkError:
        for s in sinks:
            s.close()
        raise
    return sinks


class RenderOperator(Operator):
    """Frames in, drawn and handed to the sinks. synchronized: each frame with its own result;
    passthrough: the video is the input, the overlays a second input of which only the newest
    is drawn, while it is young enough."""

    def __init__(self, rt: StageRuntime, spec: RenderSpec):
        self.rt, self.spec = rt, spec
        self.guard = BudgetGuard(stage_budget_ms=spec.stage_budget_ms)
        self.renderer: Renderer | None = None
        self.overlays: Latest | None = None
        self.max_age_ns = int(spec.overlay_max_age_ms * 1e6)

    def setup(self, ports: Ports) -> None:
        rt, spec = self.rt, self.spec
        self.renderer = _renderer(rt, spec)
        sinks = self.renderer.all_sinks()

        def note_pending() -> None:
            # frames counted out but still queued in a file sink are not delivered yet: if this
            # process dies now they never reach the file (the report counts them as lost)
            rt.stats.counters["sink_pending"] = max((sink_pending(s) for s in sinks), default=0)

        rt.stats.snapshot_hooks.append(note_pending)
        if spec.mode == "synchronized":
            ports.add_inputs(
                spec.input_links(),
                [x for link in spec.input_links() for x in rt.cfg.streams_into(link)],
            )
        else:
            ports.add_input(spec.video, rt.cfg.streams_into(spec.video))
            self.overlays = ports.add_latest(spec.input, OVERLAY_DROP_PREFIX)

    def _overlay(self, frame: Frame) -> tuple[Frame | None, float | None]:
        """Passthrough: the newest overlay if young enough for `frame`, else (None, its age)."""
        assert self.overlays is not None
        newest = self.overlays.frame
        if newest is None or newest.stream != frame.stream:
            return None, None
        age_ns = frame.capture_ns - newest.capture_ns
        if abs(age_ns) > self.max_age_ns:
            return None, age_ns / 1e6
        self.rt.stats.observe(OVERLAY_AGE_MS, max(age_ns, 0) / 1e6)
        return newest, None

    def process(self, frame: Frame, start_ns: int, predicted_miss: bool) -> Delivered | Drop:
        assert self.renderer is not None
        if not self.renderer.takes(frame):
            return Drop(TOO_MANY_STREAMS)
        overlay: Frame | None = frame
        stale_ms: float | None = None
        if self.overlays is not None:
            overlay, stale_ms = self._overlay(frame)
            if overlay is None:
                self.rt.stats.count("frames_without_overlay")
        return Delivered(frame, self.renderer.render(frame, overlay, stale_ms))

    def close(self) -> int:
        if self.renderer is None:
            return 0
        self.renderer.publish_live(force=True)
        failed = _close_sinks(self.rt, self.renderer.all_sinks())
        self.renderer.take_display_latency()  # reports that came in while the sinks closed
        return 2 if failed else 0


def _renderer(rt: StageRuntime, spec: RenderSpec) -> Renderer:
    """One stream: a Renderer; several inputs, a layout or per-stream sinks: StreamsRenderer."""
    from .render_streams import StreamsRenderer

    opened: list[Sink] = []
    sinks, per_stream_sinks = spec.typed_sinks(spec.id)
    try:
        opened += _open_sinks(rt, sinks)
        if not (spec.inputs or spec.layout or spec.per_stream_sinks):
            return Renderer(rt, spec, opened)
        main = list(opened)
        per_stream = {}
        for stream, typed in per_stream_sinks.items():
            per_stream[stream] = _open_sinks(rt, typed)
            opened += per_stream[stream]
        return StreamsRenderer(rt, spec, main, per_stream)
    except SinkError as e:
        for s in opened:
            s.close()
        raise SetupError(str(e)) from e


def run_render(rt: StageRuntime, spec: RenderSpec) -> int:
    return run_operator(rt, RenderOperator(rt, spec))


def _close_sinks(rt: StageRuntime, sinks: list[Sink]) -> bool:
    """Close every sink, recording its drops; True if one failed to finish (a recording that
    could not be written completely, say): the stage then exits non-zero, failing the run."""
    failed = False
    for sink in sinks:
        try:
            sink.close()
        except SinkError as e:
            rt.log.error("%s", e)
            failed = True
        drops = sink.drops()
        if drops:
            named = rt.stats.info.setdefault("sink_drops", {})
            named[unique_label(sink_kind(sink), named)] = dict(drops)
    return failed
