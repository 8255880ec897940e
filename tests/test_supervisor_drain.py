"""The supervisor's drain at a stop, driven step by step: the clock and the stage processes are
stand-ins, the stop logic is the real one. A backlog that is still moving once the sources have
ended is waited for (a recording's tail on a slow disk was cut 4 s after the source ended); a
drain with nothing moving, a source that does not exit, a second signal or a host without
sources keep the fixed `DRAIN_S`."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest

import stream.supervisor as sup_mod
from stream.bundled_configs import bundled_config
from stream.config import load_config_file
from stream.stages.base import stage_logger
from stream.supervisor import DRAIN_S, TERM_S, Supervisor


class FakeProc:
    """A stage process that records the signals it is sent and never exits by itself."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return None

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(sup_mod.time, "monotonic", c)
    return c


@pytest.fixture
def said() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    log = stage_logger("supervisor")  # set up as the supervisor's, before adding to it
    log.addHandler(handler)
    yield lines
    log.removeHandler(handler)


def demo_supervisor(stages: list[str] | None = None) -> tuple[Supervisor, dict[str, FakeProc]]:
    """The demo graph (grab -> infer -> render) with stand-in processes for its stages."""
    path = bundled_config("ultrasound_seg.yaml")
    sup = Supervisor(load_config_file(path), str(path), stages=stages)
    procs = {sid: FakeProc(100 + i) for i, sid in enumerate(sup.children)}
    for sid, child in sup.children.items():
        child.proc = procs[sid]  # type: ignore[assignment]
    return sup, procs


def moved(sup: Supervisor, frames: int) -> None:
    """The render stage's snapshot after `frames` frames in and out."""
    sup.snapshots[("render", 42)] = {"counters": {"in": frames, "out": frames}, "drops": {}}


def source_stops(sup: Supervisor, how: str = "exits") -> None:
    """The source stops producing: it exits, or (`lingers`) sends its final snapshot and waits
    in ZeroMQ's `term` while its lossless link hands queued frames on."""
    grab = sup.children["grab"]
    if how == "exits":
        sup._on_exit(grab, 0)
    else:
        sup.snapshots[("grab", grab.proc.pid)] = {"counters": {"out": 300}, "drops": {}, "final": True}


def advance(sup: Supervisor, clock: Clock, to: float) -> None:
    clock.t = 1000.0 + to
    sup._advance_stop()


@pytest.mark.parametrize("how", ["exits", "lingers"])
def test_frames_still_moving_after_the_sources_stopped_are_waited_for(clock, said, how) -> None:
    sup, procs = demo_supervisor()
    moved(sup, 100)
    sup.begin_stop("source grab ended")
    assert procs["grab"].signals == [signal.SIGTERM] and procs["render"].signals == []
    source_stops(sup, how)
    frames = 100
    for step in range(1, 25):  # 12 s of a backlog draining, a snapshot every 0.5 s
        frames += 10
        moved(sup, frames)
        advance(sup, clock, step * 0.5)
    assert procs["render"].signals == [] and procs["infer"].signals == []
    assert any(line.startswith("draining: frames still moving") for line in said), said
    advance(sup, clock, 12.0 + DRAIN_S - 0.1)  # nothing moved since 12 s
    assert procs["render"].signals == []
    advance(sup, clock, 12.0 + DRAIN_S + 0.1)
    assert procs["render"].signals == [signal.SIGTERM] == procs["infer"].signals
    advance(sup, clock, 12.0 + DRAIN_S + TERM_S + 0.2)
    assert procs["render"].signals == [signal.SIGTERM, signal.SIGKILL]


def test_nothing_moving_ends_the_drain_after_drain_s(clock) -> None:
    sup, procs = demo_supervisor()
    moved(sup, 100)
    sup.begin_stop("duration 10 s reached")
    source_stops(sup)
    advance(sup, clock, DRAIN_S - 0.1)
    assert procs["render"].signals == []
    advance(sup, clock, DRAIN_S + 0.1)
    assert procs["render"].signals == [signal.SIGTERM]


@pytest.mark.parametrize("case", ["source still running", "asked twice", "no source here"])
def test_the_drain_is_fixed_where_moving_frames_may_never_stop(clock, case: str) -> None:
    """A source still producing (no final snapshot yet) or a remote one could keep frames
    moving for ever; and a second signal means stop now."""
    sup, procs = demo_supervisor(["infer", "render"] if case == "no source here" else None)
    moved(sup, 100)
    if case == "asked twice":
        sup._on_signal(signal.SIGINT, None)
        source_stops(sup)
        sup._on_signal(signal.SIGINT, None)
    else:
        sup.begin_stop("duration 10 s reached")
    for step in range(1, 4):
        moved(sup, 100 + 10 * step)
        advance(sup, clock, step * (DRAIN_S + 0.2) / 3)
    assert procs["render"].signals == [signal.SIGTERM], case


def test_a_signal_while_the_stages_start_starts_no_more(clock: Clock, said: list[str]) -> None:
    path = bundled_config("ultrasound_seg.yaml")
    sup = Supervisor(load_config_file(path), str(path))
    started: list[str] = []

    def spawn(child: sup_mod.Child) -> None:
        child.proc = FakeProc(100 + len(started))  # type: ignore[assignment]
        started.append(child.spec.id)
        if len(started) == 1:  # Ctrl-C while the first stage starts
            sup._on_signal(signal.SIGINT, None)

    sup._spawn = spawn  # type: ignore[method-assign]
    sup._start_all()
    first = next(iter(sup.children))
    assert started == [first]  # the source was not started after the stop (it ran 4 s on)
    assert all(c.done for sid, c in sup.children.items() if sid != first)
    assert "stopping: signal SIGINT" in said


def test_a_signal_during_a_stage_s_popen_stops_that_stage_too(
    clock: Clock, said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal handler ran while the source's Popen was under way: the source had no process
    yet, so the stop neither signalled it nor waited for it, and it streamed on for the 4 s drain
    (96 frames delivered after a Ctrl-C)."""
    path = bundled_config("ultrasound_seg.yaml")
    sup = Supervisor(load_config_file(path), str(path))
    procs: list[FakeProc] = []

    def popen(cmd: list[str], **_kw: object) -> FakeProc:
        if cmd[-1] == "grab":
            sup._on_signal(signal.SIGINT, None)  # Ctrl-C between fork and exec
        procs.append(FakeProc(100 + len(procs)))
        return procs[-1]

    monkeypatch.setattr(sup_mod.subprocess, "Popen", popen)
    sup._start_all()
    assert list(sup.children) == ["render", "infer", "grab"]  # the source starts last
    assert [p.signals for p in procs] == [[], [], [signal.SIGTERM]]
    assert not any(c.done for c in sup.children.values())  # each is watched until it exits


def test_a_stage_ended_by_the_ctrl_c_itself_while_stopping_is_no_failure(
    clock: Clock, said: list[str]
) -> None:
    """A Ctrl-C reaches a stage started at that moment too (before its setsid it is in the
    terminal's process group): it died of SIGINT, and the run said 'render failed while
    stopping (exit -2)' and exited 1."""
    sup, _procs = demo_supervisor()
    sup._on_signal(signal.SIGINT, None)
    sup._on_exit(sup.children["render"], -signal.SIGINT)
    assert sup.exit_code == sup_mod.EXIT_OK and sup.children["render"].done
    sup._on_exit(sup.children["infer"], 1)  # any other failure while stopping still counts
    assert sup.exit_code == sup_mod.EXIT_FAILED
    assert said[-1] == "infer failed while stopping (exit 1)"
