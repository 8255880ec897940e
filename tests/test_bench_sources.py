"""`medstream bench --only sources`: the synthetic sources' per-frame cost, where the unit tests'
speed checks went (timings are not asserted here, only that each row was measured)."""

from __future__ import annotations

from tools.bench.results import targets
from tools.bench.sources import TARGET_MS, bench_sources, sources_markdown


def test_bench_sources_times_each_source_next_to_its_floor() -> None:
    rows = bench_sources(frames=3)
    assert [(r["scene"], r["step"]) for r in rows] == [
        (scene, step) for scene in TARGET_MS for step in ("floor: copy", "frame")
    ]
    assert all(r["frames"] == 3 and 0 < r["median_ms"] <= r["p99_ms"] < 10_000 for r in rows)
    assert [r["target_ms"] is None for r in rows] == [True, False, True, False]
    table = sources_markdown(rows)
    assert len(table) == 5 + len(rows) and "| endoscopy 640x480 bgr8 | frame |" in table[-1]
    verdicts = targets({"sources": rows})
    mine = [v for v in verdicts if v["target"].startswith("source ")]
    assert len(mine) == 2 and all(v["verdict"] in ("PASS", "FAIL") for v in mine)
    assert sources_markdown(None) == []
