"""A render stage with several streams, in-process (in-memory links, fake clock, a capture sink):
inputs read in turn, each stream drawn, composed per `layout:` or fanned out, every frame
accounted for."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytest

from stream.clock import FakeClock
from stream.codec import KIND_EOS, KIND_FRAME, EndOfStream, Message
from stream.config import load_config
from stream.frame import Frame
from stream.plugins import Typed
from stream.spec import ConfigError
from stream.stages import render as render_mod
from stream.stages.base import StageRuntime
from stream.stages.loop import Ports, run_operator
from stream.stages.merged_inbox import MergedInbox
from stream.stages.render import TOO_MANY_STREAMS, RenderOperator

MS = 1_000_000


class Feed:
    """An in-memory link: the given frames (stream, seq, capture offset ms), then an eos."""

    def __init__(self, clock: FakeClock, frames: list[tuple[str, int, float]], level: int):
        self.clock, self.frames, self.level, self.ended = clock, deque(frames), level, False

    def recv(self, timeout_ms: int) -> Message | None:
        if self.ended:
            return None
        if not self.frames:
            self.ended = True
            return Message(KIND_EOS, "t", 0, 0, eos=EndOfStream("x", 0, 0))
        stream, seq, offset_ms = self.frames.popleft()
        now = self.clock.now_ns()
        image = np.full((60, 80), self.level, np.uint8)
        frame = Frame(stream, seq, now + int(offset_ms * MS), now + 10_000 * MS, image)
        return Message(KIND_FRAME, "t", seq, now, frame=frame)


class Capture:
    """A sink that keeps what it was handed."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int, np.ndarray]] = []
        self.closed = False

    def write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        self.got.append((frame.stream, frame.seq, image_bgr))

    def update_stats(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def drops(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.closed = True


def _run(
    monkeypatch: pytest.MonkeyPatch, render: dict[str, Any], feeds: dict[str, Feed]
) -> tuple[StageRuntime, dict[str, Capture]]:
    links = {name: {"endpoint": f"ipc:///tmp/unused-{name}"} for name in feeds}
    cfg = load_config(
        {
            "name": "t",
            "frame_log": "",
            "links": links,
            "stages": [{"id": "r", "kind": "render", **render}],
        }
    )
    captures: dict[str, Capture] = {}

    def fake_sinks(rt: StageRuntime, typed: list[Typed]) -> list[Capture]:
        main, per_stream = cfg.stage("r").typed_sinks("r")  # type: ignore[union-attr]
        names = {id(main): "r.sinks"} | {id(t): f"r.per_stream_sinks.{s}" for s, t in per_stream.items()}
        where = names[id(typed)]
        captures[where] = Capture()
        return [captures[where]]

    monkeypatch.setattr(render_mod, "_open_sinks", fake_sinks)
    rt = StageRuntime(cfg, cfg.stage("r"), clock=FakeClock(), stats_endpoint="")
    spec = cfg.stage("r")
    try:
        code = run_operator(
            rt,
            RenderOperator(rt, spec),
            Ports(lambda link, _p: feeds[link], lambda _: None),  # type: ignore[arg-type,return-value]
        )
    finally:
        rt.close()
    assert code == 0
    return rt, captures


def test_two_inputs_composed_in_a_grid_every_frame_delivered(monkeypatch) -> None:
    clock = FakeClock()
    a = Feed(clock, [("a", i, 0.0) for i in range(5)], 40)
    b = Feed(clock, [("b", i, 0.0) for i in range(3)], 220)
    rt, caps = _run(
        monkeypatch,
        {"inputs": ["la", "lb"], "hud": False, "layout": {"type": "grid", "streams": ["b", "a"]}},
        {"la": a, "lb": b},
    )
    assert rt.stats.counters["out"] == 8 and not rt.stats.drops
    got = caps["r.sinks"].got
    assert len(got) == 8 and {g[0] for g in got} == {"r"}  # composed: one stream, the stage's
    assert len({img.shape for _, _, img in got}) == 1  # one size from the first (a cell waits)
    first = got[0][2]  # one stream so far: its tile and a blank cell for the other input
    assert first[40, 40].max() < 100 and first[40, 82 + 40].max() < 100  # a's grey, a blank
    assert np.count_nonzero(first[:, 82:].max(axis=2) > 150) > 20  # the blank cell's title
    img = got[-1][2]
    assert img.shape == (60, 2 * 80 + 2, 3)  # grid of 2: two columns, one row
    assert img[40, 40].mean() > 150 and img[40, 82 + 40].mean() < 80  # b first, as configured
    assert set(rt.stats.counters) >= {"out"} and rt.stats.counters["layout_stale_tiles"] == 0


def test_a_tile_behind_the_newest_by_more_than_max_skew_is_counted_stale(monkeypatch) -> None:
    clock = FakeClock()
    a = Feed(clock, [("a", 0, 0.0), ("a", 1, 0.0)], 40)
    b = Feed(clock, [("b", 0, -500.0)], 220)  # captured half a second before a's frames
    rt, caps = _run(
        monkeypatch,
        {
            "inputs": ["la", "lb"],
            "hud": False,
            "layout": {"type": "side_by_side", "max_skew_ms": 100},
        },
        {"la": a, "lb": b},
    )
    assert rt.stats.counters["layout_stale_tiles"] >= 1
    last = caps["r.sinks"].got[-1][2]
    red = (last[..., 2] > 200) & (last[..., 0] < 80) & (last[..., 1] < 80)
    assert red[:, 80:].any() and not red[:, :80].any()  # only b's tile is marked


def test_without_a_layout_streams_go_out_tagged_and_to_their_own_sinks(monkeypatch) -> None:
    clock = FakeClock()
    a = Feed(clock, [("a", i, 0.0) for i in range(4)], 40)
    b = Feed(clock, [("b", i, 0.0) for i in range(2)], 220)
    rt, caps = _run(
        monkeypatch,
        {"inputs": ["la", "lb"], "per_stream_sinks": {"b": [{"type": "window"}]}},
        {"la": a, "lb": b},
    )
    main = caps["r.sinks"].got
    assert sorted((s, q) for s, q, _ in main) == [("a", i) for i in range(4)] + [("b", 0), ("b", 1)]
    assert all(img.shape == (60, 80, 3) for _, _, img in main)
    assert [(s, q) for s, q, _ in caps["r.per_stream_sinks.b"].got] == [("b", 0), ("b", 1)]
    assert caps["r.per_stream_sinks.b"].closed and caps["r.sinks"].closed
    assert set(caps["r.sinks"].stats["streams"]) == {"a", "b"}


def test_streams_past_what_the_layout_shows_are_dropped_with_a_reason(monkeypatch) -> None:
    clock = FakeClock()
    feed = Feed(clock, [(f"s{i}", 0, 0.0) for i in range(6)], 90)
    rt, caps = _run(
        monkeypatch, {"input": "l", "hud": False, "layout": {"type": "pip"}}, {"l": feed}
    )
    assert rt.stats.counters["out"] == 4 and rt.stats.drops == {TOO_MANY_STREAMS: 2}


def test_single_stream_without_layout_keeps_the_plain_renderer(monkeypatch) -> None:
    clock = FakeClock()
    rt, caps = _run(monkeypatch, {"input": "l"}, {"l": Feed(clock, [("a", 0, 0.0)], 90)})
    assert [(s, q) for s, q, _ in caps["r.sinks"].got] == [("a", 0)]
    assert "streams" not in caps["r.sinks"].stats


def test_merged_inbox_takes_links_in_turn_and_ends_after_the_last() -> None:
    clock = FakeClock()
    a = Feed(clock, [("a", i, 0.0) for i in range(3)], 0)
    b = Feed(clock, [("b", i, 0.0) for i in range(1)], 0)
    merged = MergedInbox([a, b])
    kinds = []
    while (msg := merged.recv(0)) is not None:
        kinds.append("eos" if msg.kind == KIND_EOS else f"{msg.frame.stream}{msg.frame.seq}")
    assert kinds == ["a0", "b0", "a1", "a2", "eos"]  # b's eos is held until a ends too


def test_render_inputs_config_is_checked() -> None:
    def load(render: dict[str, Any]) -> None:
        load_config(
            {
                "name": "t",
                "links": {
                    "la": {"endpoint": "ipc:///tmp/u-a"},
                    "lb": {"endpoint": "ipc:///tmp/u-b"},
                },
                "stages": [{"id": "r", "kind": "render", **render}],
            }
        )

    with pytest.raises(ConfigError, match="either input or inputs"):
        load({"input": "la", "inputs": ["lb"]})
    with pytest.raises(ConfigError, match=r"inputs\[1\]: unknown link 'lc'"):
        load({"inputs": ["la", "lc"]})
    with pytest.raises(ConfigError, match="layout.type"):
        load({"inputs": ["la", "lb"], "layout": {"type": "mosaic"}})
    with pytest.raises(ConfigError, match=r"sinks\[0\]: a recorder .* per_stream_sinks"):
        load({"inputs": ["la", "lb"], "layout": {}, "sinks": [{"type": "recorder", "path": "x"}]})
    with pytest.raises(ConfigError, match=r"per_stream_sinks.b\[0\]"):
        load({"inputs": ["la", "lb"], "per_stream_sinks": {"b": [{"type": "nope"}]}})


def test_one_link_with_several_streams_draws_each_and_keeps_one_streams_accuracy(
    monkeypatch,
) -> None:
    from stream.frame import Annotations

    class WithTruth(Feed):
        def recv(self, timeout_ms: int) -> Message | None:
            msg = super().recv(timeout_ms)
            if msg is not None and msg.frame is not None and msg.frame.stream == "a":
                labels = np.zeros((60, 80), np.uint8)
                labels[10:30, 10:40] = 1
                msg.frame.parts.update(mask=labels, truth=labels)
                msg.frame.annotations = Annotations("m", ["background", "thing"])
            return msg

    clock = FakeClock()
    feed = WithTruth(clock, [("a", 0, 0.0), ("b", 0, 0.0), ("a", 1, 0.0)], 90)
    rt, caps = _run(monkeypatch, {"inputs": ["l"]}, {"l": feed})
    assert [(s, q) for s, q, _ in caps["r.sinks"].got] == [("a", 0), ("b", 0), ("a", 1)]
    assert set(caps["r.sinks"].stats["streams"]) == {"a", "b"}
    assert caps["r.sinks"].stats["streams"]["a"]["model"] == "m"
    confusion = np.array(rt.stats.info["confusion"])
    assert confusion.sum() == 2 * 60 * 80 and confusion[0, 1] == confusion[1, 0] == 0
