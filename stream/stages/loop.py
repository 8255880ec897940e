"""The frame loop of every stage, owned by the runtime (the operator model of Holoscan).

An `Operator` declares its links in `setup(ports)` (raising `SetupError` if it cannot start)
and handles one admitted frame in `process`: the frame to send on, a `Delivered` frame it
handed to its sinks, or a `Drop` with its reason. A `SourceAdapter` `read`s the next frame.
Receiving, end of stream, budget admission, spans, sending and the accounting happen here, each
outcome through `StageRuntime.settle` (stats and frame log together): every frame a stage takes
in is counted once, delivered or dropped with its reason.

An input fed by several streams ends when every one of them has ended (each end is forwarded
as it comes). An operator with a `batcher` gets its admitted frames in batches
(`process_batch`: frames of several streams in one model call; stream/stages/batcher.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from engines.pixels import pixel_format

from ..budget import LATE, BudgetGuard
from ..codec import KIND_EOS, EndOfStream, Message
from ..exit_codes import EXIT_SETUP
from ..frame import Frame
from ..stats import STAGE_MS
from ..transport import Sender
from .base import Drop, StageRuntime
from .batcher import Batcher

RECV_TIMEOUT_MS = 100
ERROR = "error"  # the drop reason of a frame whose process() raised one of `frame_errors`
BAD_PIXELS = "invalid:pixel_format"  # a source's image that does not match its pixel format
SHUTDOWN = "shutdown"  # a frame still waiting for its batch when the stage was stopped


class SetupError(Exception):
    """A stage could not start (no engine, a source or sink that will not open): not restarted."""


@dataclass(frozen=True)
class Delivered:
    """A frame a sink stage handed to its sinks itself, at `handoff_ns`."""

    frame: Frame
    handoff_ns: int


class Inbox(Protocol):
    def recv(self, timeout_ms: int) -> Message | None: ...


class Outbox(Protocol):
    last_drop: str

    def send(self, frame: Frame) -> bool: ...

    def send_eos(self, eos: EndOfStream) -> None: ...


class Latest:
    """A side input drained every loop turn; `frame` is the newest frame it carried (or None)."""

    def __init__(self, inbox: Inbox):
        self.inbox = inbox
        self.frame: Frame | None = None

    def drain(self) -> None:
        while (msg := self.inbox.recv(0)) is not None:
            if msg.frame is not None:
                self.frame = msg.frame


class Ports:
    """The links a stage declares in `setup` (ZeroMQ from `of(rt)`; in-memory ones in tests)."""

    def __init__(
        self, open_input: Callable[[str, str], Inbox], open_output: Callable[[str], Outbox]
    ):
        self._open_input = open_input
        self._open_output = open_output
        self.input: Inbox | None = None
        self.streams: set[str] = set()  # the streams the input carries, where known
        self.output: Outbox | None = None
        self.side: list[Latest] = []

    @classmethod
    def of(cls, rt: StageRuntime) -> Ports:
        return cls(lambda link, prefix: rt.receiver(link, drop_prefix=prefix), rt.sender)

    def add_input(self, link: str, streams: Collection[str] = ()) -> None:
        """The input whose frames `process` handles (one per stage); with `streams` (ids) it
        ends once all of them ended (or, while none of them was heard, once every stream heard
        ended: a producer the config does not name), else at the first end of stream."""
        self.input = self._open_input(link, "")
        self.streams = set(streams)

    def add_inputs(self, links: list[str], streams: Collection[str] = ()) -> None:
        """Several inputs read as one, in turn (stream.stages.merged_inbox); `streams` as in
        `add_input`, over all of them."""
        if len(links) == 1:
            self.add_input(links[0], streams)
            return
        from .merged_inbox import MergedInbox

        self.input = MergedInbox([self._open_input(link, "") for link in links])
        self.streams = set(streams)

    def add_output(self, link: str) -> Outbox:
        """Where the frames `process` returns are sent (and the end of stream forwarded)."""
        self.output = self._open_output(link)
        return self.output

    def add_latest(self, link: str, drop_prefix: str) -> Latest:
        """A second input of which only the newest frame matters (render's overlays)."""
        latest = Latest(self._open_input(link, drop_prefix))
        self.side.append(latest)
        return latest


class Operator:
    """A stage's logic. By default frames that missed or will miss their deadline are dropped
    on arrival, and an exception in `process` ends the stage."""

    guard: BudgetGuard  # set in __init__: the stage's own, with its prediction and stage budget
    schedules_misses = False  # True: frames predicted to miss reach process(predicted_miss=True)
    frame_errors: tuple[type[Exception], ...] = ()  # caught per frame: counted as `error` drops
    times_itself = False  # True: process() feeds the guard's stage times (else the runtime does)
    batcher: Batcher | None = None  # set: admitted frames go to process_batch, several at once

    def setup(self, ports: Ports) -> None:
        raise NotImplementedError

    def process(self, frame: Frame, start_ns: int, predicted_miss: bool) -> Frame | Delivered | Drop:
        raise NotImplementedError

    def process_batch(
        self, frames: list[Frame], start_ns: int, predicted_miss: list[bool]
    ) -> Sequence[Frame | Delivered | Drop]:
        """A batch of admitted frames (operators with a `batcher`): one result per frame."""
        raise NotImplementedError

    def close(self) -> int:
        """Release what setup opened; returns the stage's exit code."""
        return 0


class SourceAdapter(Protocol):
    """A producer: `read` gives the next frame and when work on it started, or None at the end."""

    exit_code: int

    def setup(self, ports: Ports) -> None: ...

    def read(self) -> tuple[Frame, int] | None: ...

    def eos(self) -> EndOfStream: ...

    def close(self) -> None: ...


def run_operator(rt: StageRuntime, op: Operator, ports: Ports | None = None) -> int:
    """Run `op` until stopped or its input ends. Returns the stage's exit code."""
    ports = ports or Ports.of(rt)
    try:
        op.setup(ports)
    except SetupError as e:
        rt.log.error("%s", e)
        op.close()
        return EXIT_SETUP  # could not start: not restarted
    except BaseException:  # a link that will not bind, a key file...: release what was opened
        op.close()
        raise
    try:
        if op.batcher is not None:
            _batch_loop(rt, op, op.batcher, ports)
        else:
            _loop(rt, op, ports)
    finally:
        code = op.close()
    return code


def _ended(rt: StageRuntime, msg: Message, ports: Ports, ended: set[str]) -> bool:
    """Forward an end of stream; True when the input has no stream left."""
    assert msg.eos is not None
    rt.eos = msg.eos
    rt.log.info("end of stream %s after seq %d", msg.eos.stream, msg.eos.last_seq)
    if ports.output is not None:
        ports.output.send_eos(msg.eos)
    ended.add(msg.eos.stream)
    if not ports.streams or ports.streams <= ended:
        return True
    # a producer the config does not name (a foreign one, protocol.md section 6) while none of
    # the configured streams was ever heard: its end is the input's end
    heard = set(rt.stats.streams) | ended
    return not (ports.streams & heard) and heard <= ended


def _loop(rt: StageRuntime, op: Operator, ports: Ports) -> None:
    assert ports.input is not None, "an operator declares its input in setup"
    errors_logged: set[str] = set()
    ended: set[str] = set()
    while not rt.stop_requested:
        rt.tick()
        for side in ports.side:
            side.drain()
        msg = ports.input.recv(RECV_TIMEOUT_MS)
        if msg is None:
            continue
        if msg.kind == KIND_EOS:
            if _ended(rt, msg, ports, ended):
                return
            continue
        frame = msg.frame
        assert frame is not None
        start = rt.clock.now_ns()
        verdict = op.guard.check(frame, start)
        if verdict == LATE or (verdict is not None and not op.schedules_misses):
            rt.settle(frame, Drop(verdict), start, start)
            continue
        try:
            result = op.process(frame, start, verdict is not None)
        except op.frame_errors as e:  # a bad frame must not kill the stage: count it, say why once
            rt.settle(frame, Drop(ERROR), start, rt.clock.now_ns())
            if type(e).__name__ not in errors_logged:
                errors_logged.add(type(e).__name__)
                rt.log.error("frame %d dropped: %s: %s", frame.seq, type(e).__name__, e)
            continue
        _hand_on(rt, op, frame, result, start, ports.output)


def _batch_loop(rt: StageRuntime, op: Operator, batcher: Batcher, ports: Ports) -> None:
    """Like `_loop`, but admitted frames wait in `batcher` and run together when it is due."""
    assert ports.input is not None, "an operator declares its input in setup"
    errors_logged: set[str] = set()
    ended: set[str] = set()
    clock = rt.clock
    while not rt.stop_requested:
        rt.tick()
        for side in ports.side:
            side.drain()
        reserve = int(op.guard.expected_ms() * 1e6)
        due = batcher.due_ns(reserve)
        wait_ms = RECV_TIMEOUT_MS if due is None else max(0, -((clock.now_ns() - due) // 1_000_000))
        msg = ports.input.recv(min(wait_ms, RECV_TIMEOUT_MS))
        if msg is not None and msg.kind == KIND_EOS:
            while len(batcher):  # what waits runs first (a held frame in a batch of its own)
                _run_batch(rt, op, batcher.take(clock.now_ns()), ports.output, errors_logged)
            if _ended(rt, msg, ports, ended):
                return
            continue
        if msg is not None:
            frame = msg.frame
            assert frame is not None
            now = clock.now_ns()
            if now >= frame.deadline_ns:
                rt.settle(frame, Drop(LATE), now, now)
            else:
                batcher.add(frame, now)
        now = clock.now_ns()
        if batcher.ready(now, reserve):
            _run_batch(rt, op, batcher.take(now), ports.output, errors_logged)
    while len(batcher):  # stopped with frames waiting (a held one too): each counted
        for frame in batcher.take(clock.now_ns()):
            now = clock.now_ns()
            rt.settle(frame, Drop(SHUTDOWN), now, now)


def _run_batch(
    rt: StageRuntime,
    op: Operator,
    frames: list[Frame],
    output: Outbox | None,
    errors_logged: set[str],
) -> None:
    """Admit each frame of a batch, run the admitted ones together, hand each result on."""
    if not frames:
        return
    start = rt.clock.now_ns()
    admitted: list[Frame] = []
    predicted: list[bool] = []
    for frame in frames:
        verdict = op.guard.check(frame, start)
        if verdict == LATE or (verdict is not None and not op.schedules_misses):
            rt.settle(frame, Drop(verdict), start, start)
            continue
        admitted.append(frame)
        predicted.append(verdict is not None)
    if not admitted:
        return
    rt.stats.count("batches")
    rt.stats.count("batched_frames", len(admitted))
    try:
        results = op.process_batch(admitted, start, predicted)
    except op.frame_errors as e:  # the whole call failed: every frame in it is counted
        end = rt.clock.now_ns()
        for frame in admitted:
            rt.settle(frame, Drop(ERROR), start, end)
        if type(e).__name__ not in errors_logged:
            errors_logged.add(type(e).__name__)
            rt.log.error("batch of %d dropped: %s: %s", len(admitted), type(e).__name__, e)
        return
    for frame, result in zip(admitted, results, strict=True):
        _hand_on(rt, op, frame, result, start, output)


def _hand_on(
    rt: StageRuntime,
    op: Operator,
    frame: Frame,
    result: Frame | Delivered | Drop,
    start: int,
    output: Outbox | None,
) -> None:
    end = rt.clock.now_ns()
    if isinstance(result, Drop):
        rt.settle(frame, result, start, end)
        return
    stage_ms = (end - start) / 1e6
    rt.stats.observe(STAGE_MS, stage_ms)
    if not op.times_itself and op.guard.record(stage_ms):
        rt.stats.count("stage_overruns")  # over the stage's own `stage_budget_ms`
    if isinstance(result, Delivered):
        rt.settle(result.frame, None, start, end, handoff_ns=result.handoff_ns)
        return
    assert output is not None, "an operator that returns frames declares an output"
    result.with_span(rt.id, start, end)
    sent = output.send(result)
    rt.settle(result, None if sent else Drop(output.last_drop), start, end)


def wait_for_consumers(rt: StageRuntime, out: Outbox, link: str, n: int, timeout_s: float) -> None:
    """Before the first frame: wait up to `timeout_s` for `n` consumers (a pubsub link)."""
    if not n or not isinstance(out, Sender) or out.wait_for_consumers(n, timeout_s):
        return
    if not rt.stop_requested:  # else the wait ended because the stage is being stopped
        rt.log.warning(
            "only %d of %d consumers on %s after %.0f s; starting anyway (frames to nobody are "
            "counted)",
            out.consumers,
            n,
            link,
            timeout_s,
        )


def run_source(rt: StageRuntime, source: SourceAdapter, ports: Ports | None = None) -> int:
    """Run a producer until stopped or its source ends. Returns the stage's exit code."""
    ports = ports or Ports.of(rt)
    try:
        source.setup(ports)
    except SetupError as e:
        rt.log.error("%s", e)
        return EXIT_SETUP  # could not start: not restarted
    output = ports.output
    assert output is not None, "a source declares its output in setup"
    bad_logged = False
    try:
        while not rt.stop_requested and (item := source.read()) is not None:
            rt.tick()
            frame, start = item
            rt.stats.count("captured", stream=frame.stream)
            try:  # where images enter: the one check of their pixel format before the wire
                pixel_format(frame.pixel_format).check(frame.image)
            except ValueError as e:
                rt.settle(frame, Drop(BAD_PIXELS), start, rt.clock.now_ns())
                if not bad_logged:
                    bad_logged = True
                    rt.log.error("the source's frame %d dropped: %s", frame.seq, e)
                continue
            frame.with_span(rt.id, start, frame.capture_ns)
            sent = output.send(frame)
            end = rt.clock.now_ns()
            rt.settle(frame, None if sent else Drop(output.last_drop), start, end)
            rt.stats.observe(STAGE_MS, (end - start) / 1e6)
    finally:
        output.send_eos(source.eos())
        source.close()
    return source.exit_code
