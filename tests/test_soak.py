"""A one-minute soak at 60 fps: no stage grows in memory, file descriptors or threads.
(The ten-minute soak is `medstream soak --seconds 600`.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.soak import DEMO, Series, analyse, format_soak, run_soak


def test_analyse_flags_growth() -> None:
    leaky = Series([(t, 100_000_000 + t * 2_000_000, 20 + (t > 50), 8) for t in range(0, 60)], [1])
    steady = Series([(t, 100_000_000, 20, 8) for t in range(0, 60)], [2, 3])
    out = analyse({"leaky": leaky, "restarted": steady}, warmup_s=10, window_s=10, max_growth=0.1)
    assert not out["leaky"]["ok"] and "resident memory grew" in out["leaky"]["why"]
    assert "file descriptors" in out["leaky"]["why"]
    assert not out["restarted"]["ok"] and "restarted" in out["restarted"]["why"]


@pytest.mark.slow
def test_one_minute_soak_at_60_fps(tmp_path: Path) -> None:
    result = run_soak(DEMO, seconds=60, fps=60, warmup_s=20, window_s=10, out_dir=tmp_path)
    print(format_soak(result))
    assert result["ok"], format_soak(result) + "\n" + (tmp_path / "run.log").read_text()[-3000:]
    assert set(result["stages"]) == {"grab", "infer", "render"}
