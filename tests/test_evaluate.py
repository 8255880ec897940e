"""`medstream evaluate` on a small set: both tables, markdown and JSON, every row measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.cli import main as medstream
from tools.eval_real import METHODS as REAL_METHODS
from tools.evaluate import ENDO_ROWS, US_ROWS

pytestmark = pytest.mark.slow  # `medstream evaluate` end to end


def test_evaluate_quick(tmp_path: Path) -> None:
    md, js = tmp_path / "e.md", tmp_path / "e.json"
    code = medstream(["evaluate", "--quick", "--out-md", str(md), "--out-json", str(js)])
    assert code == 0
    report = json.loads(js.read_text())
    us, endo = report["ultrasound"], report["endoscopy"]
    assert [r["methods"] for r in us] == [r.methods for r in US_ROWS]
    assert [r["methods"] for r in endo] == [r.methods for r in ENDO_ROWS]
    assert {r["group"] for r in us} == {
        "input", "traditional", "CNN", "hybrid", "transformer", "CNN pruned", "GAN",
        "distillation",
    }  # fmt: skip
    for r in us[1:]:
        if next(row for row in US_ROWS if row.methods == r["methods"]).segment:
            assert 0 < r["pixel_accuracy"] <= 1 and 0 <= r["mean_dice"] <= 1, r
        assert r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"] and r["backend"], r
        networks = r["backend"] != "classical"
        assert ("gflops" in r and "parameters" in r) == networks, r
        if networks:
            assert r["gflops"] > 0.01 and r["parameters"] > 1000, r
    by = {r["methods"]: r for r in us}
    assert by["us-seg-pruned"]["gflops"] < by["classical-median -> us-seg"]["gflops"]  # us-seg
    assert by["us-denoise & us-seg"]["gflops"] > by["us-seg-int8"]["gflops"]
    timed = [r for r in us[1:] if "pixel_accuracy" in r]  # a denoiser alone has no accuracy
    for key in ("median_ms", "pixel_accuracy"):  # the fastest and the most accurate (of ties,
        best = (min if key == "median_ms" else max)(r[key] for r in timed)  # one) are on it
        assert any(r["pareto"] for r in timed if r[key] == best), key
    assert report["pareto"]["front"] == [r["methods"] for r in timed if r["pareto"]]
    assert (tmp_path / "e_pareto.png").stat().st_size > 1000
    assert {"cpu_name", "cpu_flags"} <= set(report["setup"])
    for r in us:  # the texture columns beside PSNR, on every row with an output image
        assert ("gmsd" in r) == ("psnr_db" in r) and ("texture_ratio" in r) == ("psnr_db" in r)
    gan = next(r for r in us if r["group"] == "GAN")
    assert "pixel_accuracy" not in gan and gan["psnr_db"] > us[0]["psnr_db"]
    assert gan["gmsd"] < us[0]["gmsd"] and gan["texture_ratio"] < us[0]["texture_ratio"]
    assert us[0]["psnr_db"] > 15 and "pixel_accuracy" not in us[0]  # the noisy input itself
    hybrid = next(r for r in us if r["group"] == "hybrid")
    assert hybrid["psnr_db"] > us[0]["psnr_db"]  # the denoiser improves on the input
    assert set(report["verdict"]) >= {
        "hybrid_accuracy_ge_96",
        "hybrid_psnr_ge_39",
        "hybrid_under_25_ms",
    }
    text = md.read_text()
    assert "| traditional | classical-nlm -> classical-otsu |" in text
    assert "| GAN | us-denoise-gan |" in text and "GAN vs L1 (the same network)" in text
    assert "What the adversarial term itself does" in text  # the card's ablations
    assert "Literature reference rows" in text and "onnxruntime" in text
    assert "| params | GFLOPs | median ms | p99 ms | Pareto |" in text
    assert "| transformer | us-seg-former |" in text and "(e_pareto.png)" in text
    assert report["setup"]["us_frames"] == 2 and report["setup"]["cpu"]
    real = report["real_no_reference"]
    if "skipped" not in real:  # needs pydicom-data (the test extra)
        assert [r["method"] for r in real["rows"]] == ["input", *REAL_METHODS]
        assert real["rows"][0]["enl_gain"] == 1.0 and real["setup"]["frames"] >= 3
        for r in real["rows"][1:]:
            assert r["enl_gain"] > 1 and 0 < r["edge_preservation"] <= 1.2 and r["median_ms"] > 0, r
        assert real["best"] in REAL_METHODS and "Real cines, no reference" in text
