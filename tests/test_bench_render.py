"""tools/bench_render runs end to end (a smoke test; timings are not asserted)."""

from __future__ import annotations

import json

from tools.bench_render import main


def test_bench_render_writes_a_row_per_step(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--frames", "10", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    steps = {r["step"] for r in rows}
    assert {"floor: copy", "mask.draw", "render (draw chain)"} <= steps
    assert all(0 < r["median_ms"] <= r["max_ms"] < 10_000 for r in rows)
    assert "render (draw chain)" in capsys.readouterr().out
