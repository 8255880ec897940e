"""Several streams through one graph: the batcher (injected clock), the live receiver's
per-stream mailbox, per-stream accounting, batched inference."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from engines import EngineSpec, load_pipeline
from stream.clock import FakeClock
from stream.config import load_config, load_config_file
from stream.frame import Frame
from stream.histogram import Histogram
from stream.report import build_report, format_report, video_path
from stream.sinks.prometheus import exposition
from stream.stages.base import Drop, StageRuntime
from stream.stages.batcher import Batcher
from stream.stats import GLASS_MS, StageStats
from tools.live_stats import LiveView
from tools.top import format_view

from .helpers import OpenLink, make_frame, wait_until
from .test_stage_loop import Script

MS = 1_000_000


def frame(stream: str, seq: int, capture_ns: int, budget_ms: float = 100.0) -> Frame:
    return Frame(stream, seq, capture_ns, capture_ns + int(budget_ms * MS), np.zeros((4, 4), np.uint8))


def test_a_batch_waits_at_most_max_wait_then_runs_what_it_has() -> None:
    b = Batcher(max_batch=4, max_wait_ms=5.0)
    b.add(frame("a", 0, 0), now_ns=0)
    assert not b.ready(4 * MS)
    assert b.ready(5 * MS)
    assert [f.stream for f in b.take(5 * MS)] == ["a"]
    assert not b.ready(100 * MS)  # nothing open


def test_a_full_batch_runs_at_once() -> None:
    b = Batcher(max_batch=2, max_wait_ms=50.0)
    b.add(frame("a", 0, 0), 0)
    assert not b.ready(1 * MS)
    b.add(frame("b", 0, 0), 1 * MS)
    assert b.ready(1 * MS)


def test_a_batch_never_waits_past_its_earliest_deadline_less_the_run_time() -> None:
    b = Batcher(max_batch=4, max_wait_ms=50.0)
    b.add(frame("a", 0, 0, budget_ms=100), 0)
    b.add(frame("b", 0, 0, budget_ms=20), 1 * MS)  # due by 20 ms, a run takes 8 ms
    assert b.due_ns(reserve_ns=8 * MS) == 12 * MS
    assert not b.ready(11 * MS, reserve_ns=8 * MS)
    assert b.ready(12 * MS, reserve_ns=8 * MS)


def test_a_second_frame_of_a_stream_closes_the_batch_and_opens_the_next() -> None:
    b = Batcher(max_batch=4, max_wait_ms=50.0)
    b.add(frame("fast", 0, 0), 0)
    b.add(frame("fast", 1, 2 * MS), 2 * MS)
    assert b.ready(2 * MS)
    assert [f.seq for f in b.take(2 * MS)] == [0]
    assert [f.seq for f in b.frames] == [1] and b.opened_ns == 2 * MS


def test_a_slow_stream_is_never_starved_by_a_fast_one() -> None:
    """A 200 fps stream and a 10 fps stream into a batcher run by a loop on an injected clock
    (as the stage's: take when due, else sleep until the next arrival or the due time): every
    frame of both streams runs, none waits past max_wait."""
    clock = FakeClock(0)
    b = Batcher(max_batch=2, max_wait_ms=3.0)
    arrivals = sorted(
        [(t * MS, "fast") for t in range(0, 1000, 5)] + [(t * MS + 1, "slow") for t in range(0, 1000, 100)]
    )
    ran: dict[str, list[int]] = {"fast": [], "slow": []}
    waits: list[int] = []
    seqs = {"fast": 0, "slow": 0}

    def run_if_ready() -> None:
        if b.ready(clock.now_ns()):
            for f in b.take(clock.now_ns()):
                ran[f.stream].append(f.seq)
                waits.append(clock.now_ns() - f.capture_ns)

    for t, stream in arrivals:
        due = b.due_ns()
        if due is not None and due < t:  # the loop wakes at the due time, before this arrival
            clock.sleep_until_ns(due)
            run_if_ready()
        clock.sleep_until_ns(t)
        b.add(frame(stream, seqs[stream], t), clock.now_ns())
        seqs[stream] += 1
        run_if_ready()
    clock.sleep_until_ns(b.due_ns() or 0)
    run_if_ready()
    assert ran["slow"] == list(range(10))
    assert ran["fast"] == list(range(200))
    assert 0 < max(waits) <= 3 * MS


def test_the_live_receiver_keeps_the_newest_frame_per_stream(link: OpenLink) -> None:
    """A fast stream floods the link; the slow stream's one frame is not pushed out, and it is
    handed over before the fast stream's (it waited longer)."""
    ends = link("pushpull", "live", hwm=64)
    now = time.time_ns()
    slow = dataclasses.replace(make_frame(0, (4, 4), now), stream="slow")
    assert ends.tx.send(slow)
    for seq in range(20):
        ends.tx.send(dataclasses.replace(make_frame(seq, (4, 4), now), stream="fast"))
    assert wait_until(lambda: ends.rx._drops[("overflow", "fast")] == 19, 5.0)
    got = [ends.rx.recv(1000), ends.rx.recv(1000)]
    assert [m.frame.stream for m in got if m and m.frame] == ["slow", "fast"]
    stats = ends.rx_stats
    fast = stats.streams["fast"]
    assert "overflow" not in stats.streams["slow"].drops
    assert stats.streams["slow"].counters["in"] == 1 and fast.counters["in"] == 1
    assert fast.drops["overflow"] == 19  # 20 frames of it, one handed over
    assert stats.drops["overflow"] == fast.drops["overflow"]


def test_per_stream_counts_add_up_to_the_stage_totals() -> None:
    stats = StageStats("render", "render", FakeClock(0))
    for i in range(5):
        stats.frame_out(i, stream="a")
        stats.observe(GLASS_MS, 10.0 + i, stream="a")
    stats.frame_out(9, stream="b")
    stats.drop("late", 3, stream="b")
    stats.drop("invalid:header")  # not a frame of any stream
    snap = stats.snapshot()
    assert snap["streams"]["a"]["counters"] == {"out": 5}
    assert snap["streams"]["b"] == {"counters": {"out": 1}, "drops": {"late": 3}, "hists": {}}
    assert snap["counters"]["out"] == 6 and snap["drops"] == {"late": 3, "invalid:header": 1}
    assert snap["streams"]["a"]["hists"][GLASS_MS]["count"] == 5


def test_run_batch_gives_the_same_results_as_one_call_per_frame() -> None:
    pipeline = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime"))
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (h, w), dtype=np.uint8) for h, w in ((256, 256), (300, 200), (128, 160))]
    try:
        batched = pipeline.run_batch(images, ["gray8"] * 3)  # type: ignore[attr-defined]
        single = [pipeline(im, "gray8") for im in images]
    finally:
        pipeline.close()
    for b, s, im in zip(batched, single, images, strict=True):
        assert b.mask is not None and s.mask is not None and b.mask.shape == im.shape
        assert np.mean(b.mask == s.mask) > 0.999
        assert b.confidence is not None and s.confidence is not None
        assert np.abs(b.confidence.astype(int) - s.confidence.astype(int)).max() <= 2


def test_run_batch_refuses_mismatched_lists() -> None:
    pipeline = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime"))
    try:
        with pytest.raises(ValueError):
            pipeline.run_batch([np.zeros((8, 8), np.uint8)] * 2, ["gray8"])  # type: ignore[attr-defined]
    finally:
        pipeline.close()


ROOT = Path(__file__).resolve().parent.parent
MULTI = load_config_file(ROOT / "configs" / "multi_probe.yaml")
ORMM = load_config_file(ROOT / "configs" / "or_multimodal.yaml")


def snap(stage: str, counters: dict, streams: dict, info: dict | None = None, drops: dict | None = None) -> dict:
    return {
        "stage": stage, "pid": 1, "started_ns": 1, "final": True, "counters": counters,
        "drops": drops or {}, "hists": {}, "info": info or {}, "streams": streams,
        "first_out_ns": None, "last_out_ns": None,
    }


def per(out: int = 0, drops: dict | None = None, glass: list[float] = (), misses: int = 0) -> dict:
    h = Histogram()
    for ms in glass:
        h.record(ms)
    hists = {GLASS_MS: h.to_dict()} if glass else {}
    return {"counters": {"out": out, "budget_misses": misses}, "drops": drops or {}, "hists": hists}


def test_each_stream_is_accounted_on_its_own() -> None:
    """probe1 loses frames on the way (overflow at infer, late at render); probe2 loses none;
    probe3's last 2 frames vanished (lost); probe4 sent nothing that arrived."""
    snapshots = [
        snap("probe1", {"captured": 30}, {"probe1": {"counters": {"captured": 30}}}, {"stream": "probe1", "epoch": 1}),
        snap("probe2", {"captured": 20}, {"probe2": {"counters": {"captured": 20}}}, {"stream": "probe2", "epoch": 1}),
        snap("probe3", {"captured": 10}, {"probe3": {"counters": {"captured": 10}}}, {"stream": "probe3", "epoch": 1}),
        snap("probe4", {"captured": 0}, {}, {"stream": "probe4", "epoch": 1}),
        snap("infer", {"out": 53}, {"probe1": per(25, {"overflow": 5}), "probe2": per(20), "probe3": per(8)},
             drops={"overflow": 5}),
        snap("render", {"out": 51}, {
            "probe1": per(23, {"late": 2}, [10.0] * 20 + [90.0] * 3, misses=3),
            "probe2": per(20, {}, [20.0] * 20),
            "probe3": per(8, {}, [30.0] * 8),
        }, drops={"late": 2}),
    ]
    report = build_report(MULTI, snapshots, 1.0, {}, "test")
    f = report["frames"]
    assert f["captured"] == 60 and f["delivered"] == 51 and f["accounted"]
    s = report["streams"]
    assert set(s) == {"probe1", "probe2", "probe3", "probe4"}
    assert s["probe1"]["frames"] == {
        "captured": 30, "delivered": 23, "dropped": {"late": 2, "overflow": 5}, "dropped_total": 7,
        "accounted": True, "captured_unreported": 0,
    }
    assert s["probe2"]["frames"]["dropped"] == {} and s["probe2"]["frames"]["delivered"] == 20
    assert s["probe3"]["frames"]["dropped"] == {"lost": 2}
    assert s["probe4"]["frames"]["captured"] == 0 and s["probe4"]["budget_ms"] == 150
    assert s["probe1"]["budget_ms"] == MULTI.budget_ms
    assert s["probe1"]["budget_misses"] == 3 and s["probe2"]["budget_misses"] == 0
    g1, g2 = s["probe1"]["latency_ms"]["glass_to_glass"], s["probe2"]["latency_ms"]["glass_to_glass"]
    assert g1["count"] == 23 and g1["p99"] > 80 > g1["p50"]
    assert g2["count"] == 20 and 19 < g2["p50"] <= g2["p95"] <= g2["p99"] < 21
    text = format_report(report)
    assert "probe3" in text and "lost 2" in text and "p95" in text
    # the sum over the streams is the total
    assert sum(x["frames"]["captured"] for x in s.values()) == f["captured"]
    assert sum(x["frames"]["dropped_total"] for x in s.values()) == f["dropped_total"]


def test_one_stream_keeps_the_text_report_unchanged() -> None:
    cfg = load_config_file(ROOT / "configs" / "ultrasound_seg.yaml")
    snapshots = [
        snap("grab", {"captured": 5}, {"grab": {"counters": {"captured": 5}}}, {"stream": "grab", "epoch": 1}),
        snap("render", {"out": 5}, {"grab": per(5)}),
    ]
    report = build_report(cfg, snapshots, 1.0, {}, "test")
    assert report["streams"]["grab"]["frames"]["accounted"]
    assert "p95" not in format_report(report)


def test_streams_into_follows_fan_in_and_infer_stages() -> None:
    assert MULTI.streams_into("frames") == ["probe1", "probe2", "probe3", "probe4"]
    assert MULTI.streams_into("results") == ["probe1", "probe2", "probe3", "probe4"]
    assert ORMM.streams_into("results") == ["ultrasound", "endoscope"]
    assert video_path(ORMM, ORMM.stage("render")) == [  # type: ignore[arg-type]
        "ultrasound", "endoscope", "infer-us", "infer-endo", "render"
    ]


@pytest.mark.slow
def test_two_probes_through_one_batched_infer_stage_end_to_end(tmp_path: Path) -> None:
    from .test_pipeline import finish, start_run

    data = yaml.safe_load((ROOT / "configs" / "multi_probe.yaml").read_text())
    data["run_dir"] = str(tmp_path / "run")
    data["budget_ms"] = 300  # a loaded 2-core test machine
    data["stages"] = [s for s in data["stages"] if s["id"] not in ("probe3", "probe4")]
    infer = next(s for s in data["stages"] if s["kind"] == "infer")
    infer["batch"] = {"max_batch": 2, "max_wait_ms": 30}
    render = next(s for s in data["stages"] if s["kind"] == "render")
    render["sinks"] = []
    config, report_path = tmp_path / "two.yaml", tmp_path / "report.json"
    config.write_text(yaml.safe_dump(data))
    sup = start_run(config, report_path, duration=6)
    out = finish(sup)
    assert sup.returncode == 0, out
    report = json.loads(report_path.read_text())
    assert report["frames"]["accounted"], report["frames"]
    for sid in ("probe1", "probe2"):
        f = report["streams"][sid]["frames"]
        assert f["accounted"] and f["captured"] >= 60, (sid, f)
        assert f["delivered"] >= 0.3 * f["captured"], (sid, f)  # neither stream starves
        assert report["streams"][sid]["latency_ms"]["glass_to_glass"]["count"] == f["delivered"]
    infer_counters = report["stages"]["infer"]["counters"]
    assert infer_counters["batched_frames"] > infer_counters["batches"] > 0  # some ran together
    assert "probe2" in out and "p95" in out  # the per-stream table


def _two_stream_stats(clock: FakeClock, seconds: int, view: LiveView | None = None) -> list[StageStats]:
    """Two grabs (a: 30 fps, b: 10 fps) and a render that drops 1 frame of b per second."""
    from .test_top import _message

    stages = [StageStats(sid, kind, clock) for sid, kind in (("a", "grab"), ("b", "grab"), ("render", "render"))]
    a, b, render = stages
    for t in range(seconds):
        for stats, stream, n in ((a, "a", 30), (b, "b", 10)):
            stats.count("captured", n, stream=stream)
            for _ in range(n - (stream == "b")):
                render.frame_out(clock.now_ns(), stream)
                render.observe(GLASS_MS, 20.0 if stream == "a" else 60.0, stream)
        render.drop("late", 1, stream="b")
        render.count("budget_misses", 1, stream="b")
        clock.advance_ms(1000)
        if view is not None:
            view.update(_message(stages, float(t)))
    return stages


def test_top_shows_each_stream() -> None:
    view = LiveView(window_s=1.0)
    _two_stream_stats(FakeClock(), 3, view)
    rows = {r.stream: r for r in view.stream_rows()}
    assert rows["a"].fps_captured == 30.0 and rows["a"].fps_delivered == 30.0
    assert rows["b"].fps_captured == 10.0 and rows["b"].fps_delivered == 9.0
    assert rows["a"].glass_ms[0] is not None and abs(rows["a"].glass_ms[0] - 20.0) < 0.5
    assert abs(rows["b"].glass_ms[1] - 60.0) < 0.5 and rows["b"].drops == {"late": 3}
    text = format_view(view, "ipc://x", 1.0, "")
    assert "fps cap" in text and "late 3" in text.split("fps cap")[1]


def test_prometheus_labels_by_stream_only_with_several_streams() -> None:
    from .test_prometheus import _samples
    from .test_top import _message

    clock = FakeClock()
    s = _samples(exposition(_message(_two_stream_stats(clock, 2), 2.0)))  # labels sorted
    assert s['medstream_stream_frames_out_total{pipeline="p",stage="render",stream="a"}'] == 60
    assert s['medstream_stream_frames_out_total{pipeline="p",stage="render",stream="b"}'] == 18
    assert s['medstream_stream_drops_total{pipeline="p",reason="late",stage="render",stream="b"}'] == 2
    assert s['medstream_stream_budget_misses_total{pipeline="p",stage="render",stream="b"}'] == 2
    assert s['medstream_stream_glass_to_glass_seconds_count{pipeline="p",stage="render",stream="b"}'] == 18
    one = StageStats("render", "render", clock)
    one.frame_out(clock.now_ns(), "only")
    assert "medstream_stream_" not in exposition(_message([one], 1.0))


class StreamInbox:
    """MemInbox (tests/test_stage_loop.py) with each frame on the stream its script names."""

    def __init__(self, clock: FakeClock, plan: list, streams: list[str]):
        from .test_stage_loop import MemInbox

        self.inner, self.streams = MemInbox(clock, plan), streams

    def recv(self, timeout_ms: int):  # type: ignore[no-untyped-def]
        msg = self.inner.recv(timeout_ms)
        if msg is not None and msg.frame is not None:
            msg.frame.stream = self.streams[msg.frame.seq]
        return msg


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.builds(
                Script,
                slack_ms=st.floats(-5, 60),
                action=st.sampled_from(["pass", "pass", "drop", "crash"]),
                work_ms=st.floats(0, 40),
                sendable=st.booleans(),
            ),
            st.sampled_from(["a", "b", "c"]),
        ),
        max_size=40,
    ),
    max_batch=st.integers(1, 3),
)
def test_every_frame_of_a_batched_stage_is_counted_once(plan: list, max_batch: int) -> None:
    from stream.stages.loop import ERROR, Ports, run_operator

    from .test_stage_loop import MemOutbox, Scripted, check_accounting, runtime

    class Batched(Scripted):
        def __init__(self, clock: FakeClock):
            super().__init__(clock, schedules_misses=False)
            self.batcher = Batcher(max_batch, 5.0)
            self.batches: list[list[Frame]] = []

        def process_batch(self, frames, start_ns, predicted_miss):  # type: ignore[no-untyped-def]
            self.batches.append(list(frames))
            self.clock.advance_ms(max(f.meta["script"].work_ms for f in frames))
            if any(f.meta["script"].action == "crash" for f in frames):
                raise RuntimeError("batched call failed")
            return [Drop("custom") if f.meta["script"].action == "drop" else f for f in frames]

    clock = FakeClock()
    rt, log = runtime(clock)
    op = Batched(clock)
    outbox = MemOutbox()
    scripts, streams = [p[0] for p in plan], [p[1] for p in plan]
    ports = Ports(lambda *_: StreamInbox(clock, scripts, streams), lambda _: outbox)
    try:
        assert run_operator(rt, op, ports) == 0
    finally:
        rt.close()
    check_accounting(rt, log, len(plan), outbox.sent)
    for batch in op.batches:
        assert 1 <= len(batch) <= max_batch
        assert len({f.stream for f in batch}) == len(batch)  # one frame per stream and batch
    crashed = sum(len(b) for b in op.batches if any(f.meta["script"].action == "crash" for f in b))
    assert rt.stats.drops[ERROR] == crashed
    per_stream = {x: s.counters["out"] + sum(s.drops.values()) for x, s in rt.stats.streams.items()}
    assert per_stream == {x: streams.count(x) for x in set(streams)}  # each stream's own count


def test_bench_rows_and_table_from_run_reports(tmp_path: Path) -> None:
    from tools.bench.multistream import multistream_markdown, summarize, write_configs
    from tools.bench.results import targets

    def report(infer_cpu: float, inferred: int, p99: float) -> dict:
        return {
            "frames": {"captured": 100, "delivered": inferred},
            "stages": {
                "probe1": {"kind": "grab", "cpu_s": 0.5, "counters": {"out": 100}},
                "infer": {"kind": "infer", "cpu_s": infer_cpu, "counters": {"out": inferred}},
            },
            "streams": {
                "probe1": {
                    "frames": {"captured": 100, "delivered": inferred, "dropped": {}},
                    "latency_ms": {"glass_to_glass": {"p50": 10.0, "p99": p99}},
                    "budget_ms": 120.0,
                }
            },
        }

    batched = summarize("batched", [report(0.3, 100, 90.0)])
    one = summarize("batch 1", [report(0.5, 100, 130.0)])
    assert batched["infer_cpu_ms_per_frame"] == 3.0 and one["infer_cpu_ms_per_frame"] == 5.0
    assert batched["cpu_ms_per_delivered_frame"] == 8.0
    assert batched["all_streams_within_budget"] and not one["all_streams_within_budget"]
    verdicts = {t["target"]: t for t in targets({"multistream": [batched, one]})}
    cpu = next(v for k, v in verdicts.items() if "CPU per frame" in k)
    assert cpu["measured"] == "0.6x" and cpu["verdict"] == "PASS"
    text = "\n".join(multistream_markdown([batched, one]))
    assert "| batched | 1 |" in text and "probe1 130.0 (120) OVER" in text
    # the variants' configs: one graph batched / batch 1, four separate pipelines
    assert len(write_configs(tmp_path, "batched")) == 1
    separate = write_configs(tmp_path, "separate")
    assert len(separate) == 4
    for path in separate:
        cfg = load_config_file(path)
        assert [s.kind for s in cfg.stages] == ["grab", "infer", "render"]


def test_profile_splits_end_to_end_by_stream() -> None:
    from tools.profiling.analysis import summarize as profile_summary
    from tools.profiling.tables import format_table

    from .profile_data import STAGES, synthetic_table

    table, truth = synthetic_table(200)
    for f in table.frames.values():
        f.stream = "odd" if f.seq % 2 else "even"
    summary = profile_summary(table, STAGES, 50.0)
    rows = summary["streams"]
    assert set(rows) == {"odd", "even"}
    for name, parity in (("odd", 1), ("even", 0)):
        glass = [g for seq, g in truth["glass"].items() if seq % 2 == parity]
        assert rows[name]["delivered"] == len(glass) and rows[name]["captured"] == 100
        assert rows[name]["max"] == pytest.approx(max(glass), abs=1e-3)
        assert rows[name]["budget_ms"] == 50.0
    assert rows["even"]["budget_misses"] == 1  # frame 30
    assert rows["odd"]["drops"].get("late", 0) == sum(1 for s in truth["dropped"] if s % 2)
    assert "stream odd" in format_table(summary)
    one, _ = synthetic_table(50)
    assert profile_summary(one, STAGES, 50.0)["streams"] == {}


def test_run_batch_takes_an_engines_largest_batch_in_chunks() -> None:
    pipeline = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime"))
    engine = pipeline._engine  # type: ignore[attr-defined]
    sizes: list[int] = []
    run = engine.run

    def counting(feeds: dict) -> dict:
        sizes.append(next(iter(feeds.values())).shape[0])
        return run(feeds)

    engine.run, engine.max_batch = counting, 4
    images = [np.full((64, 64), i * 20, np.uint8) for i in range(6)]
    try:
        results = pipeline.run_batch(images, ["gray8"] * 6)  # type: ignore[attr-defined]
    finally:
        pipeline.close()
    assert sizes == [4, 2] and len(results) == 6


@pytest.mark.parametrize(("config", "expected"), [("multi_probe.yaml", 4), ("ultrasound_seg.yaml", None)])
def test_a_batch_holds_at_most_one_frame_per_incoming_stream(config: str, expected: int | None) -> None:
    """Batching on an input with one stream would only wait: the stage runs frame by frame."""
    from stream.stages.infer import InferOperator
    from stream.stages.loop import Ports

    from .test_stage_loop import MemOutbox

    data = yaml.safe_load((ROOT / "configs" / config).read_text())
    infer = next(s for s in data["stages"] if s["kind"] == "infer")
    infer["batch"] = {"max_batch": 8, "max_wait_ms": 5}
    cfg = load_config(data)
    spec = next(s for s in cfg.stages if s.kind == "infer")
    rt = StageRuntime(cfg, spec, clock=FakeClock(), stats_endpoint="")
    pipeline = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime"))
    op = InferOperator(rt, spec, pipeline)  # type: ignore[arg-type]
    try:
        op.setup(Ports(lambda *_: None, lambda _: MemOutbox()))  # type: ignore[arg-type, return-value]
        assert (None if op.batcher is None else op.batcher.max_batch) == expected
    finally:
        op.close()
        rt.close()


def test_a_frame_lost_on_the_link_is_counted_against_its_own_stream(
    link: OpenLink, zmq_ctx: zmq.Context
) -> None:
    """One sender of two streams (an infer stage into a render stage): `link_seq` runs per
    stream, so a gap in stream a is a's overflow, and b's frames after a's are no restart."""
    from stream.codec import encode_frame

    from .test_link_gaps import deliver, forger

    def forged(stream: str, link_seq: int, seq: int) -> list:
        frame = Frame(stream, seq, 1, 2, np.zeros((4, 4), np.uint8), "gray8", epoch=7)
        return encode_frame(frame, "infer", link_seq, 1)

    with forger(zmq_ctx, "lossless", FakeClock()) as (pub, rx):
        assert deliver(pub, rx, forged("a", 1, 0))
        assert deliver(pub, rx, forged("b", 1, 0))
        assert deliver(pub, rx, forged("a", 3, 2))  # a's frame 1 was lost on the link
        assert deliver(pub, rx, forged("b", 2, 1))
        rx.recv(0)
        stats = rx.stats
        assert stats.streams["a"].drops == {"overflow": 1} and not stats.streams["b"].drops
        assert stats.counters["sender_restarts"] == 0

    # and the sending side numbers each stream on its own
    ends = link("pubsub", "lossless")
    assert wait_until(lambda: ends.tx.wait_for_consumers(1, 0.05), 5.0)
    for stream in ("a", "b", "a"):
        assert ends.tx.send(dataclasses.replace(make_frame(0, (4, 4), time.time_ns()), stream=stream))
    assert ends.tx.stream_seq == {"a": 2, "b": 1} and ends.tx.link_seq == 3


def test_frames_waiting_for_their_batch_when_stopped_are_counted() -> None:
    from stream.codec import KIND_FRAME, Message
    from stream.stages.loop import SHUTDOWN, Ports, run_operator

    from .test_stage_loop import MemOutbox, Scripted, runtime

    clock = FakeClock()
    rt, log = runtime(clock)
    frames = [frame(x, 0, clock.now_ns(), budget_ms=5000) for x in ("a", "b")]

    class Inbox:
        def recv(self, timeout_ms: int) -> Message | None:
            if frames:
                return Message(KIND_FRAME, "t", 1, clock.now_ns(), frame=frames.pop(0))
            rt.stop_requested = True
            return None

    op = Scripted(clock, schedules_misses=False)
    op.batcher = Batcher(max_batch=3, max_wait_ms=1000.0)
    try:
        assert run_operator(rt, op, Ports(lambda *_: Inbox(), lambda _: MemOutbox())) == 0
    finally:
        rt.close()
    assert rt.stats.drops == {SHUTDOWN: 2} and rt.stats.streams["b"].drops == {SHUTDOWN: 1}
    assert [r[2] for r in log.records] == [SHUTDOWN, SHUTDOWN]
