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
    assert result["viewer_polls"]["ok"] >= 30  # the viewer's JPEG path ran, about once a second


@pytest.mark.slow
def test_relative_out_works_and_progress_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.chdir(tmp_path)  # the soak's child runs in this working directory too
    progress = io.StringIO()
    result = run_soak(
        DEMO, seconds=7, fps=30, warmup_s=1, window_s=2, out_dir=Path("rel/soak"),
        progress_s=2, progress=progress,
    )
    # the run itself (the growth verdicts need a longer warm-up than a test affords)
    assert result["run_problems"] == [], format_soak(result)
    assert result["exit_code"] == 0 and result["frames"]["delivered"] > 0
    assert Path(result["out_dir"]) == tmp_path / "rel" / "soak"
    assert (tmp_path / "rel" / "soak" / "report.json").is_file()
    lines = progress.getvalue().splitlines()
    assert len(lines) >= 2 and all(ln.startswith("soak: ") for ln in lines), lines
    assert "infer rss" in lines[-1] and "fds" in lines[-1] and "threads" in lines[-1]


def test_a_failed_run_says_why() -> None:
    result = {
        "ok": False, "seconds": 10, "fps": 30, "warmup_s": 1, "window_s": 2, "exit_code": 2,
        "stages": {}, "frames": {}, "fps_delivered": None, "viewer_polls": {},
        "out_dir": "/x", "run_problems": ["the run exited with status 2 (config error: ...)"],
    }
    text = format_soak(result)
    assert "FAIL: the run exited with status 2 (config error: ...)" in text


def test_times_that_compare_nothing_are_refused() -> None:
    from tools.soak import check_times

    assert check_times(600, 60, 10) is None
    assert check_times(60, 60, 10) is not None and "--seconds (60)" in check_times(60, 60, 10)
    assert check_times(65, 60, 10) is not None
