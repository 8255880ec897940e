"""us-despeckle-real: the real-ultrasound data split, the bundled model and card, the training
script's quick mode, and the model's effect on a held-out real frame (no reference)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines import EngineSpec, load_pipeline
from engines.registry import MODELS_DIR, resolve_model
from tools import real_us_data

pytest.importorskip("pydicom", reason="needs pydicom: pip install -e '.[test]'")
pytest.importorskip("data_store", reason="needs pydicom-data: pip install -e '.[test]'")

from tools.eval_real import best_despeckler, evaluate_real, held_out_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "us-despeckle-real"


def test_held_out_pictures_never_reach_training() -> None:
    pictures = {s.name: s.picture for s in real_us_data.SCANS}
    train = {pictures[n] for n in real_us_data.TRAIN}
    held = {pictures[n] for n in real_us_data.HELD_OUT}
    assert train and held and not train & held
    assert set(real_us_data.EVALUATED) <= set(real_us_data.HELD_OUT)
    assert set(real_us_data.TRAIN) | set(real_us_data.HELD_OUT) == set(pictures)


def test_real_frames_decode_to_grey() -> None:
    echo = list(real_us_data.frames("echo", every=10))
    assert len(echo) == 3  # frames 0, 10, 20 of 30
    assert all(f.dtype == np.uint8 and f.shape == (240, 320) for f in echo)
    assert not np.array_equal(echo[0], echo[1])  # a cine: the heart moves
    ob = next(real_us_data.frames("ob"))
    assert ob.shape == (600, 800) and ob.ndim == 2
    # The DICOM region fits the OB file, not the rescaled echo copy (regions of its original).
    assert real_us_data.region_mask("ob", ob.shape) is not None
    assert real_us_data.region_mask("echo", echo[0].shape) is None
    with pytest.raises(ValueError, match="unknown scan"):
        real_us_data.scan("nope")


def test_card_says_what_it_is_for_and_what_it_saw() -> None:
    card = json.loads((MODELS_DIR / MODEL / "card.json").read_text())
    assert card["task"] == "denoising" and card["torchscript"] == "model.pt"
    assert card["notice"] == "Research use only, not for diagnosis"
    assert card["intended_use"] and "pydicom-data" in card["training_data"]
    training = card["training"]
    assert set(training["train_scans"]) == set(real_us_data.TRAIN)
    assert set(training["held_out_scans"]) == set(real_us_data.HELD_OUT)
    for name in real_us_data.HELD_OUT:
        assert real_us_data.scan(name).file in card["training_data"].split("Held out")[1]
    assert isinstance(training["seed"], int) and training["train_seconds"] > 0
    assert card["command"].startswith("python -m tools.train_despeckle_real")
    denoise = json.loads((MODELS_DIR / "us-denoise" / "card.json").read_text())
    ratio = card["architecture"]["parameters"] / denoise["architecture"]["parameters"]
    assert 0.5 < ratio < 2  # the same size class as us-denoise
    for key in ("enl_gain", "cnr_gain", "edge_preservation"):
        assert key in card["metrics"]
    assert resolve_model(MODEL).torchscript_path is not None


def test_model_despeckles_a_held_out_real_frame() -> None:
    frames = held_out_frames(every=30, scans=("echo",))
    pipeline = load_pipeline(EngineSpec(model=MODEL, backend="onnxruntime", threads=1))
    try:
        out = pipeline(frames[0].image, "gray8").image
        assert out is not None and out.shape == frames[0].image.shape
        scores = evaluate_real(pipeline, frames)
    finally:
        pipeline.close()
    identity = evaluate_real(None, frames)
    assert identity["enl_gain"] == pytest.approx(1.0)
    assert identity["edge_preservation"] == pytest.approx(1.0)
    assert scores["enl_gain"] > 2.0  # smoother where the tissue is flat
    assert scores["edge_preservation"] > 0.7  # the walls of the heart softened, not wiped out


def test_best_despeckler_rule() -> None:
    rows = [
        {"method": "input", "enl_gain": 1.0, "edge_preservation": 1.0},
        {"method": "blur", "enl_gain": 9.0, "edge_preservation": 0.5, "median_ms": 1.0, "p99_ms": 2.0},
        {"method": "slow", "enl_gain": 5.0, "edge_preservation": 0.95, "median_ms": 200.0, "p99_ms": 250.0},
        {"method": "spiky", "enl_gain": 4.0, "edge_preservation": 0.95, "median_ms": 90.0, "p99_ms": 150.0},
        {"method": "good", "enl_gain": 3.0, "edge_preservation": 0.92, "median_ms": 10.0, "p99_ms": 12.0},
        {"method": "weak", "enl_gain": 1.2, "edge_preservation": 0.99, "median_ms": 5.0, "p99_ms": 6.0},
    ]
    assert best_despeckler(rows) == "good"  # "spiky": median under the budget, p99 over it
    assert best_despeckler(rows[:2]) is None


@pytest.mark.slow  # a training run in a child process
def test_quick_training_run(tmp_path: Path) -> None:
    out = tmp_path / "usdr"
    cmd = [sys.executable, "-m", "tools.train_despeckle_real", "--out", str(out), "--quick"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "epoch 1/1" in run.stdout and "held-out ENL gain" in run.stdout
    card = json.loads((out / "card.json").read_text())
    assert card["command"] == f"python -m tools.train_despeckle_real --out {out} --quick"
    assert card["notice"] and card["training"]["held_out_scans"] == list(real_us_data.HELD_OUT)
    assert card["metrics"]["frames"] >= 3 and card["cost"]["gflops"] > 0
    pipeline = load_pipeline(EngineSpec(model=str(out / "model.onnx"), backend="pytorch"))
    image = pipeline(np.full((100, 140), 60, np.uint8), "gray8").image
    assert image is not None and image.shape == (100, 140)
    pipeline.close()


def test_dicom_cine_config_runs_the_documented_best_despeckler() -> None:
    from stream.config import load_config_file

    cfg = load_config_file(ROOT / "configs" / "dicom_cine.yaml")
    infer = next(s for s in cfg.stages if s.kind == "infer")
    real = json.loads((ROOT / "docs" / "evaluate.json").read_text())["real_no_reference"]
    assert infer.engine.model == real["best"]
    assert real["best"] in (ROOT / "docs" / "evaluate.md").read_text()


def test_blind_spot_input_never_depends_on_the_hidden_pixels() -> None:
    pytest.importorskip("torch", reason="needs the train extra: pip install -e '.[train]'")
    import cv2

    from tools.train_despeckle_real import CELL, blind_spot

    img = np.random.default_rng(0).random((64, 96)).astype(np.float32)
    masked, targets = blind_spot(np.random.default_rng(5), img, 3)
    assert targets.sum() == (64 // CELL) * (96 // CELL)
    hole = cv2.dilate(targets.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    np.testing.assert_array_equal(masked[~hole], img[~hole])  # the context is untouched
    assert not np.allclose(masked[targets], img[targets])  # the targets are hidden
    changed = img.copy()
    changed[hole] = 1.0 - changed[hole]  # any other values under the holes
    again, same_targets = blind_spot(np.random.default_rng(5), changed, 3)
    np.testing.assert_array_equal(same_targets, targets)
    np.testing.assert_array_equal(again, masked)  # the network sees nothing of them
