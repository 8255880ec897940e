"""`medstream profile --run` on a short real run: a complete report folder that agrees with the
run report of the same run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tools.profiling.chrome_trace import check_trace

from .pipelines import light_config, medstream

pytestmark = pytest.mark.slow  # `medstream profile --run`


@pytest.mark.parametrize("mode", ["synchronized", "passthrough"])
def test_profile_of_a_run_agrees_with_its_run_report(tmp_path: Path, mode: str) -> None:
    config = light_config(tmp_path)
    if mode == "passthrough":
        data = yaml.safe_load(config.read_text())
        data["stages"][2].update(mode="passthrough", video="frames")
        config.write_text(yaml.safe_dump(data))
    out = tmp_path / "profile"
    p = medstream(
        "profile", str(config), "--run", "--duration", "5", "--warmup", "0", "--out", str(out)
    )
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stdout + stderr
    for name in (
        "index.html",
        "summary.json",
        "table.md",
        "frames.csv",
        "trace.json",
        "latency_over_time.png",
        "glass_to_glass.png",
        "time_breakdown.png",
        "run_report.json",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    report = json.loads((out / "run_report.json").read_text())
    agreement = summary["agreement"]
    assert agreement["ok"], [c for c in agreement["checks"] if not c["ok"]]
    assert len(agreement["checks"]) >= 10
    assert summary["end_to_end"]["delivered"] == report["frames"]["delivered"] >= 100
    assert "checks agree" in stdout and "glass-to-glass" in stdout
    assert check_trace(json.loads((out / "trace.json").read_text())) == []
    with (out / "frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report["frames"]["captured"]
    assert sum(r["fate"] == "delivered" for r in rows) == report["frames"]["delivered"]
    page = (out / "index.html").read_text()
    assert "time_breakdown.png" in page and "trace.json" in page
    assert "PASS" in page or "FAIL" in page
