"""`medstream top`: live figures from the stats channel, plain output when piped."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from stream.clock import FakeClock
from stream.stats import GLASS_MS, STAGE_MS, StageStats, StatsPublisher
from stream.stats_relay import SnapshotCollector
from tools.live_stats import LiveView
from tools.top import CLEAR, format_view

from .helpers import ipc_endpoint, wait_until
from .pipelines import light_config, medstream


def _message(stats: list[StageStats], t_s: float) -> dict:
    snaps = []
    for s in stats:
        snap = s.snapshot()
        snap["now_ns"] = int(t_s * 1e9)
        snaps.append(snap)
    return {
        "v": 1,
        "pipeline": "p",
        "budget_ms": 50.0,
        "stages": [{"id": s.stage, "kind": s.kind} for s in stats],
        "now_ns": int(t_s * 1e9),
        "final": False,
        "exit": "",
        "snapshots": snaps,
        "report": None,
    }


def test_rates_and_window_percentiles() -> None:
    clock = FakeClock()
    grab, render = StageStats("grab", "grab", clock), StageStats("render", "render", clock)
    view = LiveView(window_s=1.0)
    for i in range(3):
        grab.count("captured", 30)
        render.count("in", 30)
        for _ in range(30):
            render.frame_out(clock.now_ns())
            render.observe(GLASS_MS, 100.0 if i == 0 else 10.0)  # the first second was slow
            render.observe(STAGE_MS, 2.0)
        render.drop("late", 1)
        render.count("budget_misses", 2)
        view.update(_message([grab, render], float(i)))
    rows = {r.stage: r for r in view.rows()}
    assert rows["grab"].fps_in == 30.0 and rows["render"].fps_out == 30.0
    assert abs(rows["render"].glass_ms[1] - 10.0) < 0.1  # the slow second left the window
    assert rows["render"].drops == {"late": 3} and rows["render"].misses == 6
    text = format_view(view, "ipc://x", 1.0, "")
    assert "render" in text and "late 3" in text and CLEAR not in text


def test_collector_gathers_pushes_from_stages_without_a_supervisor(
    zmq_ctx: zmq.Context, ipc_dir: Path
) -> None:
    endpoint = ipc_endpoint(ipc_dir, "stats")
    collector = SnapshotCollector(zmq_ctx, endpoint, "alone", 40.0)
    stats = StageStats("infer", "infer", FakeClock())
    stats.count("in", 5)
    pub = StatsPublisher(zmq_ctx, endpoint, stats, interval_s=0.05)
    got: list[dict] = []

    def received() -> bool:
        pub.publish()
        msg = collector.recv(200)
        got.extend([msg] if msg is not None else [])
        return bool(got)

    assert wait_until(received, 10)
    msg = got[0]
    assert msg["pipeline"] == "alone"
    assert msg["snapshots"][0]["counters"] == {"in": 5}
    assert msg["stages"] == [{"id": "infer", "kind": "infer"}]


@pytest.mark.slow
def test_top_on_a_real_run_piped_prints_plain_tables(tmp_path: Path) -> None:
    config = light_config(tmp_path)
    run = medstream("run", str(config), "--duration", "6", "--report", str(tmp_path / "r.json"))
    try:
        top = medstream("top", str(config), "--interval", "0.5")  # stdout is a pipe
        out, err = top.communicate(timeout=60)
        assert top.returncode == 0, err
        assert "\x1b[" not in out  # no ANSI codes when not a terminal
        assert "ended: duration 6 s reached" in out
        last = out.strip().split("\n\n")[-1]
        for stage in ("grab", "infer", "render"):
            assert f"\n{stage} " in last, last
        head = medstream("top", str(config), "--interval", "0.2")
        # the reader goes away after one line: top must end quietly, not with a traceback
        first = head.stdout.readline()
        head.stdout.close()
        head.wait(timeout=30)
        assert first.startswith("medstream top")
        assert "Traceback" not in head.stderr.read()
    finally:
        run.communicate(timeout=60)
    assert run.returncode == 0


def test_a_target_that_is_neither_config_nor_endpoint_is_named_as_given() -> None:
    """`top foo://x` said 'foo:/x: neither ...' (the path's normalised form)."""
    from stream.spec import ConfigError
    from tools.stats_source import open_stats

    ctx = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=r"^foo://x: neither a config file nor"):
            open_stats(ctx, "foo://x", False)
    finally:
        ctx.term()
