"""The runtime's frame loop over in-memory links (no processes, no sockets): whatever a stage's
frames meet (late arrival, predicted misses, drops, crashes in process(), refused sends), every
frame taken in is counted exactly once, identically in the stats and in the frame log."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.budget import BudgetGuard
from stream.clock import FakeClock
from stream.codec import KIND_EOS, KIND_FRAME, EndOfStream, Message
from stream.config import load_config
from stream.frame import Frame
from stream.stages.base import Drop, StageRuntime
from stream.stages.loop import BAD_PIXELS, ERROR, Operator, Ports, run_operator, run_source

IMAGE = np.zeros((4, 4), np.uint8)


@dataclass(frozen=True)
class Script:
    """What happens to one frame: its slack to the deadline on arrival (ms, <= 0: late), what
    process() does with it and for how long, and whether the link takes it."""

    slack_ms: float
    action: str  # "pass", "drop" or "crash"
    work_ms: float
    sendable: bool
    bad_pixels: bool = False  # a source's image not of its pixel format


scripts = st.lists(
    st.builds(
        Script,
        slack_ms=st.floats(-5, 60),
        action=st.sampled_from(["pass", "pass", "drop", "crash"]),
        work_ms=st.floats(0, 40),
        sendable=st.booleans(),
        bad_pixels=st.booleans(),
    ),
    max_size=40,
)


class MemInbox:
    """An in-memory input: the frames (stamped against the clock as they are taken), then an
    end of stream, then nothing."""

    def __init__(self, clock: FakeClock, plan: list[Script]):
        self.clock, self.plan, self.seq = clock, deque(plan), 0

    def recv(self, timeout_ms: int) -> Message | None:
        if self.seq < 0:
            return None
        if not self.plan:
            self.seq = -1
            return Message(KIND_EOS, "test", 0, 0, eos=EndOfStream("s", 1, 0))
        s = self.plan.popleft()
        now = self.clock.now_ns()
        frame = Frame("s", self.seq, now, now + int(s.slack_ms * 1e6), IMAGE, epoch=1)
        frame.meta["script"] = s
        self.seq += 1
        return Message(KIND_FRAME, "test", self.seq, now, frame=frame)


class MemOutbox:
    """An in-memory output that refuses the frames whose script says so."""

    def __init__(self) -> None:
        self.last_drop = ""
        self.sent: list[Frame] = []
        self.eos: list[EndOfStream] = []

    def send(self, frame: Frame) -> bool:
        if not frame.meta["script"].sendable:
            self.last_drop = "overflow"
            return False
        self.sent.append(frame)
        return True

    def send_eos(self, eos: EndOfStream) -> None:
        self.eos.append(eos)


class LogRecorder:
    """Stands in for the frame log: what it was told about each frame."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int, str]] = []

    def out(self, frame: Frame, start_ns: int, end_ns: int, handoff_ns: int | None = None) -> None:
        self.records.append(("out", frame.seq, ""))

    def drop(self, frame: Frame, reason: str, start_ns: int, end_ns: int) -> None:
        self.records.append(("drop", frame.seq, reason))

    def close(self) -> None:
        pass


class Scripted(Operator):
    frame_errors = (RuntimeError,)

    def __init__(self, clock: FakeClock, schedules_misses: bool):
        self.clock = clock
        self.guard = BudgetGuard(min_samples=1, stage_budget_ms=20.0)
        self.schedules_misses = schedules_misses
        self.seen: list[int] = []

    def setup(self, ports: Ports) -> None:
        ports.add_input("in")
        ports.add_output("out")

    def process(self, frame: Frame, start_ns: int, predicted_miss: bool) -> Frame | Drop:
        self.seen.append(frame.seq)
        s: Script = frame.meta["script"]
        self.clock.advance_ms(s.work_ms)
        if s.action == "crash":
            raise RuntimeError("model failed")
        return Drop("custom") if s.action == "drop" else frame


def runtime(clock: FakeClock) -> tuple[StageRuntime, LogRecorder]:
    cfg = load_config(
        {
            "name": "t",
            "frame_log": "",
            "links": {"in": {"endpoint": "ipc:///tmp/unused-in"}},
            "stages": [{"id": "render", "kind": "render", "input": "in"}],
        }
    )
    rt = StageRuntime(cfg, cfg.stage("render"), clock=clock, stats_endpoint="")
    rt.framelog.close()
    log = LogRecorder()
    rt.framelog = log  # type: ignore[assignment]
    return rt, log


def check_accounting(rt: StageRuntime, log: LogRecorder, taken: int, sent: list[Frame]) -> None:
    stats = rt.stats
    assert stats.counters["out"] + sum(stats.drops.values()) == taken
    assert stats.counters["out"] == len(sent) == sum(r[0] == "out" for r in log.records)
    assert Counter(r[2] for r in log.records if r[0] == "drop") == stats.drops
    assert sorted(r[1] for r in log.records) == list(range(taken))  # each frame exactly once


@settings(max_examples=60, deadline=None)
@given(plan=scripts, schedules_misses=st.booleans())
def test_every_frame_an_operator_takes_in_is_counted_once(
    plan: list[Script], schedules_misses: bool
) -> None:
    clock = FakeClock()
    rt, log = runtime(clock)
    op = Scripted(clock, schedules_misses)
    outbox = MemOutbox()
    try:
        code = run_operator(rt, op, Ports(lambda *_: MemInbox(clock, plan), lambda _: outbox))
    finally:
        rt.close()
    assert code == 0
    check_accounting(rt, log, len(plan), outbox.sent)
    assert outbox.eos == [EndOfStream("s", 1, 0)]  # the end of stream is passed on
    drops = rt.stats.drops
    assert drops[ERROR] == sum(plan[i].action == "crash" for i in op.seen)
    assert drops["custom"] == sum(plan[i].action == "drop" for i in op.seen)
    assert all(plan[f.seq].sendable and plan[f.seq].action == "pass" for f in outbox.sent)
    assert all(f.trace[-1].stage == "render" for f in outbox.sent)  # the runtime adds the span
    assert drops["late"] == sum(int(s.slack_ms * 1e6) <= 0 for s in plan)  # late on arrival
    assert len(op.seen) == len(plan) - drops["late"] - drops["will_miss"]  # the rest reach process
    if schedules_misses:  # predicted misses are the operator's to decide
        assert drops["will_miss"] == 0


class ScriptedSource:
    def __init__(self, clock: FakeClock, plan: list[Script]):
        self.clock, self.plan, self.seq, self.exit_code = clock, deque(plan), 0, 0

    def setup(self, ports: Ports) -> None:
        ports.add_output("out")

    def read(self) -> tuple[Frame, int] | None:
        if not self.plan:
            return None
        start = self.clock.now_ns()
        s = self.plan.popleft()
        self.clock.advance_ms(s.work_ms)
        now = self.clock.now_ns()
        image = IMAGE.astype(np.float32) if s.bad_pixels else IMAGE
        frame = Frame("s", self.seq, now, now + 50_000_000, image, epoch=1, meta={"script": s})
        self.seq += 1
        return frame, start

    def eos(self) -> EndOfStream:
        return EndOfStream("s", 1, self.seq - 1)

    def close(self) -> None:
        pass


@settings(max_examples=30, deadline=None)
@given(plan=scripts)
def test_every_frame_a_source_captures_is_counted_once(plan: list[Script]) -> None:
    clock = FakeClock()
    rt, log = runtime(clock)
    outbox = MemOutbox()
    try:
        code = run_source(rt, ScriptedSource(clock, plan), Ports(_no_input, lambda _: outbox))
    finally:
        rt.close()
    assert code == 0
    assert rt.stats.counters["captured"] == len(plan)
    check_accounting(rt, log, len(plan), outbox.sent)
    assert rt.stats.drops[BAD_PIXELS] == sum(s.bad_pixels for s in plan)  # never on the wire
    assert rt.stats.drops["overflow"] == sum(not s.sendable and not s.bad_pixels for s in plan)
    assert all(f.image.dtype == np.uint8 for f in outbox.sent)
    assert outbox.eos == [EndOfStream("s", 1, len(plan) - 1)]


def _no_input(*_: Any) -> MemInbox:
    raise AssertionError("a source has no input")


def test_a_models_boxes_reach_the_wire_as_they_left_the_engine() -> None:
    """One box form: the engine's `Box` objects are the frame's annotations, and the wire
    gives back equal ones."""
    from engines import InferenceResult
    from engines.api import Box
    from stream.codec import decode, encode_frame
    from stream.stages.infer import annotate_frame

    boxes = [Box(1.5, 2.0, 30.0, 40.0, 1, 0.9), Box(0.0, 0.0, 3.0, 3.0, 0, 0.25)]

    class Detector:
        model_id, labels, backend, device, precision = "det", ["a", "b"], "fake", "cpu", "fp32"

        def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
            return InferenceResult(mask=None, boxes=boxes)

    frame = Frame("s", 0, 1, 2, IMAGE, epoch=1)
    out = annotate_frame(frame, Detector())  # type: ignore[arg-type]
    assert out.annotations.boxes == boxes and out.annotations.boxes[0] is boxes[0]
    msg = decode(encode_frame(out, "infer", 1, 3))
    assert msg.frame is not None and msg.frame.annotations.boxes == boxes


def test_an_operator_that_cannot_start_exits_with_the_setup_code_and_is_closed() -> None:
    from stream.exit_codes import EXIT_SETUP
    from stream.stages.loop import SetupError

    class NoEngine(Scripted):
        closed = False

        def setup(self, ports: Ports) -> None:
            raise SetupError("cannot load engine: no such model")

        def close(self) -> int:
            self.closed = True
            return 0

    clock = FakeClock()
    rt, log = runtime(clock)
    op = NoEngine(clock, False)
    try:
        code = run_operator(rt, op, Ports(lambda *_: MemInbox(clock, []), lambda _: MemOutbox()))
    finally:
        rt.close()
    assert (code, op.closed, log.records) == (EXIT_SETUP, True, [])


def _infer_render(render: dict[str, Any] | None, infer: dict[str, Any] | None = None) -> Any:
    """An infer stage on `in` -> `out` and, unless `render` is None, a render stage reading `out`."""
    stages: list[dict[str, Any]] = [
        {"id": "infer", "kind": "infer", "input": "in", "output": "out", **(infer or {})}
    ]
    if render is not None:
        stages.append({"id": "render", "kind": "render", "input": "out", **render})
    names = ("in", "out", "raw") if render and render.get("video") else ("in", "out")
    links = {k: {"endpoint": f"ipc:///tmp/unused-{k}"} for k in names}
    return load_config({"name": "t", "frame_log": "", "links": links, "stages": stages})


@pytest.mark.parametrize(
    ("render", "infer", "sent"),
    [
        ({}, {}, False),  # a render stage drawing labels only never reads it
        ({"overlay": "both"}, {}, True),
        ({"overlay": "confidence"}, {}, True),
        ({"mode": "passthrough", "video": "raw"}, {}, False),  # overlays from `out`, labels only
        (None, {}, True),  # no reader in the config: a foreign one gets every part
        ({}, {"confidence_part": "always"}, True),
    ],
)
def test_the_confidence_part_is_sent_only_while_a_reader_may_draw_it(
    render: dict[str, Any] | None, infer: dict[str, Any], sent: bool
) -> None:
    from engines import InferenceResult
    from stream.stages.infer import InferOperator

    confidence = np.full(IMAGE.shape, 200, np.uint8)

    class Segmenter:
        model_id, labels, backend, device, precision = "seg", ["bg", "a"], "fake", "cpu", "fp32"

        def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
            return InferenceResult(mask=np.ones(image.shape[:2], np.uint8), confidence=confidence)

        def close(self) -> None:
            pass

    cfg = _infer_render(render, infer)
    rt = StageRuntime(cfg, cfg.stage("infer"), clock=FakeClock(), stats_endpoint="")
    op = InferOperator(rt, cfg.stage("infer"), Segmenter())  # type: ignore[arg-type]
    try:
        op.setup(Ports(lambda *_: None, lambda _: MemOutbox()))  # type: ignore[arg-type, return-value]
        out = op.process(Frame("s", 0, 1, 10**12, IMAGE, epoch=1), 0, False)
    finally:
        op.close()
        rt.close()
    assert isinstance(out, Frame) and "mask" in out.parts
    assert ("confidence" in out.parts) == sent
    if sent:
        assert out.parts["confidence"] is confidence
