"""`medstream bench --quick` runs end to end and writes its JSON and markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .pipelines import medstream

pytestmark = pytest.mark.slow  # spawns `medstream bench --quick` (about a minute)


def test_quick_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    p = medstream("bench", "--quick", "--out", str(out))
    stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 0, stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    assert result["mode"] == "quick"
    for key in ("cpu", "cores", "python", "pyzmq", "numpy", "load_average_at_start"):
        assert key in result["machine"], key
    paced = result["transport"]["paced"]
    assert {r["transport"] for r in paced} >= {
        "pyzmq-tcp", "medstream-tcp", "medstream-shm", "medstream-decode"
    }
    for r in paced:
        assert r["received"] >= 0.8 * r["sent"], r  # paced below capacity: nearly all arrive
        assert r["latency_p50_ms"] > 0 and r["latency_p99_ms"] >= r["latency_p50_ms"]
    assert {r["size"] for r in result["transport"]["copy"]} == {"512x512 gray", "1080x1920x3"}
    slow = {r["transport"]: r for r in result["slow_consumer"]}
    assert slow["medstream-shm"]["received"] < slow["medstream-shm"]["sent"]  # latest wins
    pipe = result["pipelines"][0]
    assert pipe["multi_process"]["fps"] and pipe["single_process"]["fps"]
    rec = result["recorder"]  # 60 frames of 1080p through `medstream run` to a recording
    assert rec["recorded"] == rec["frames"] == 60 and rec["recorded_in_order"], rec
    assert rec["fps_captured"] > 0 and rec["floor_fps"] > 0, rec
    assert all(t["verdict"] for t in result["targets"])
    md = (out / "bench.md").read_text()
    assert md.startswith("Machine:") and "Targets" in md and "medstream-shm" in md
    assert "Recorder: 60 frames of 1080p BGR" in md
    assert "| target | measured | limit | verdict |" in stdout
