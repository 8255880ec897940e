"""The calibrated speckle level (tools/speckle_calibration.py, `medstream evaluate --speckle-levels`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.cli import main as medstream
from tools.evaluate import US_ROWS
from tools.speckle_calibration import (
    CALIBRATION_ROW,
    calibrate,
    crossing_level,
    parse_levels,
    psnr_curves,
)


def test_crossing_level_on_a_line() -> None:
    # psnr = 40 - 10 * level: 30 dB at 1.0, 35 dB at 0.5
    points = [(0.25, 37.5), (1.5, 25.0), (0.75, 32.5)]  # unsorted on purpose
    assert crossing_level(points, 30.0) == pytest.approx(1.0)
    assert crossing_level(points, 35.0) == pytest.approx(0.5)
    assert crossing_level(points, 37.5) == pytest.approx(0.25)  # on a measured point
    assert crossing_level(points, 45.0) is None and crossing_level(points, 20.0) is None


def test_calibrate_refines_a_curved_response_to_the_tolerance() -> None:
    """PSNR = 40 - 20 log10(1 + 3 level): 30 dB at level 3; chords through sparse points miss."""
    import math

    def truth(level: float) -> float:
        return 40.0 - 20.0 * math.log10(1.0 + 3.0 * level)

    calls: list[float] = []

    def measure(level: float) -> float:
        calls.append(level)
        return truth(level)

    points = [(v, truth(v)) for v in (0.5, 2.0, 3.0)]
    first = crossing_level(points, 29.0)
    assert first is not None and abs(truth(first) - 29.0) > 0.25  # one interpolation is not enough
    result = calibrate(points, measure, target=29.0, tolerance=0.05, max_steps=6)
    exact = (10 ** (11.0 / 20.0) - 1.0) / 3.0
    assert result["within_tolerance"] is True
    assert abs(result["psnr_db"] - 29.0) <= 0.05  # type: ignore[operator]
    assert result["level"] == pytest.approx(exact, abs=0.02)
    assert 2 <= len(calls) <= 6 and len(result["steps"]) == len(calls)  # type: ignore[arg-type]


def test_calibrate_says_why_when_the_sweep_misses_the_target() -> None:
    result = calibrate([(0.5, 28.0), (1.0, 26.0)], lambda level: 0.0, target=30.0)
    assert result["level"] is None and "outside the swept PSNR range" in str(result["reason"])


def test_calibrate_reports_the_best_step_when_it_runs_out() -> None:
    result = calibrate([(0.0, 40.0), (1.0, 20.0)], lambda level: 31.0, target=30.0, max_steps=2)
    assert result["within_tolerance"] is False and result["psnr_db"] == 31.0


def test_parse_levels() -> None:
    assert parse_levels("1.0,0.25, 0.5,0.5") == [0.25, 0.5, 1.0]
    for bad in ("1.0", "0,1", "a,b", "0.5,4"):
        with pytest.raises(ValueError, match="speckle levels"):
            parse_levels(bad)


def test_psnr_curves_one_per_denoiser() -> None:
    sweep = [
        {"level": lv, "rows": [
            {"group": "input", "methods": "(none)", "psnr_db": 30 - lv},
            {"group": "CNN", "methods": "us-denoise & us-seg", "psnr_db": 35 - lv},
            {"group": "hybrid", "methods": "us-denoise -> us-seg", "psnr_db": 35 - lv},
            {"group": "CNN", "methods": "us-seg-int8"},
        ]}
        for lv in (0.5, 1.0)
    ]  # fmt: skip
    curves = psnr_curves(sweep)
    assert curves == {
        "input (noisy)": [(0.5, 29.5), (1.0, 29.0)],
        "us-denoise": [(0.5, 34.5), (1.0, 34.0)],
    }


@pytest.mark.slow
def test_evaluate_quick_with_speckle_levels(tmp_path: Path) -> None:
    md, js = tmp_path / "e.md", tmp_path / "e.json"
    argv = ["evaluate", "--quick", "--speckle-levels", "0.5,1.0", "--out-md", str(md)]
    assert medstream([*argv, "--out-json", str(js)]) == 0
    cal = json.loads(js.read_text())["speckle_calibration"]
    assert [e["level"] for e in cal["sweep"]] == [0.5, 1.0]
    nlm = [next(r for r in e["rows"] if r["methods"] == CALIBRATION_ROW) for e in cal["sweep"]]
    assert nlm[0]["psnr_db"] > nlm[1]["psnr_db"] + 2  # less speckle, better denoised image
    inputs = [e["rows"][0]["psnr_db"] for e in cal["sweep"]]
    assert inputs[0] > inputs[1] + 4  # half the speckle amplitude: about +6 dB on the input
    assert nlm[0]["psnr_db"] > 30 > nlm[1]["psnr_db"]  # the sweep brackets 30 dB
    assert 0.5 < cal["level"] < 1.0 and abs(cal["psnr_db"] - 30.0) <= 1.0
    assert [r["methods"] for r in cal["rows"]] == [r.methods for r in US_ROWS]
    assert all(r["median_ms"] > 0 for r in cal["rows"][1:])
    assert set(cal["targets"]) == {"cnn_psnr_ge_36", "hybrid", "any_hybrid_meets_all"}
    text = md.read_text()
    assert f"Calibrated speckle level **{cal['level']:.3f}**" in text
    if "path" in cal["plot"]:
        assert Path(cal["plot"]["path"]).stat().st_size > 1000
