"""The training script: a --quick run writes a loadable ONNX model and a complete card."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra: pip install -e '.[train]'")
pytest.importorskip("onnx", reason="needs the train extra: pip install -e '.[train]'")

from engines import EngineSpec, load_pipeline  # noqa: E402
from stream.sources.phantom import LABELS  # noqa: E402
from tools.onnx_flops import count_flops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _train(out: Path, seed: int) -> str:
    cmd = [
        sys.executable,
        "-m",
        "tools.train_seg",
        "--out",
        str(out),
        "--quick",
        "--seed",
        str(seed),
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow  # a training run
def test_quick_training_run(tmp_path: Path) -> None:
    out = tmp_path / "model"
    stdout = _train(out, 3)
    assert "epoch 1/1" in stdout and "val mean fg Dice" in stdout

    card = json.loads((out / "card.json").read_text())
    assert card["labels"] == LABELS
    assert card["command"] == f"python -m tools.train_seg --out {out} --quick --seed 3"
    assert card["training"]["seed"] == 3
    assert set(card["metrics"]["dice"]) == set(LABELS)
    assert card["cost"]["gflops"] == pytest.approx(count_flops(out / "model.onnx").gflops, abs=1e-4)
    assert card["cost"]["latency_ms"]["pipeline_median_ms"] > 0

    pipeline = load_pipeline(EngineSpec(model=str(out / "model.onnx")))
    mask = pipeline(np.zeros((480, 640), np.uint8), "gray8").mask
    assert mask is not None and mask.shape == (480, 640) and int(mask.max()) < len(LABELS)
    pipeline.close()

    _train(tmp_path / "again", 3)
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    _train(tmp_path / "other", 4)
    assert (tmp_path / "other" / "model.onnx").read_bytes() != (out / "model.onnx").read_bytes()


@pytest.mark.slow  # a training run in a child process
def test_quick_mixed_scene_training_keeps_unknown_card_fields(tmp_path: Path) -> None:
    out = tmp_path / "mix"
    out.mkdir()
    kept = {"notice": "Research use only", "x_other_tool": {"method": "x", "threshold": 1.5}}
    (out / "card.json").write_text(json.dumps({**kept, "metrics": {"old": 1}}))
    cmd = [sys.executable, "-m", "tools.train_seg", "--out", str(out), "--quick", "--scene", "mix"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "held-out anatomy Dice" in run.stdout
    card = json.loads((out / "card.json").read_text())
    assert {k: card[k] for k in kept} == kept  # fields other tools own survive a retrain
    assert "old" not in card["metrics"]  # the fields this script writes are replaced
    assert card["training"]["scene"] == "mix" and "anatomy_randomisation" in card["training"]
    assert set(card["metrics_anatomy"]["dice"]) == set(LABELS)
    assert "anatomy" in card["metrics_anatomy"]["data"]
    assert card["command"].endswith("--quick --scene mix")


def test_flop_count_of_a_known_convolution(tmp_path: Path) -> None:
    import torch

    conv = torch.nn.Conv2d(3, 8, 3, padding=1, groups=1)
    path = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            conv, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17
        )
    assert count_flops(path).flops == 2 * 8 * 32 * 32 * 3 * 3 * 3


def _quick(module: str, out: Path) -> str:
    cmd = [sys.executable, "-m", module, "--out", str(out), "--quick"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow  # a training run
def test_quick_denoise_training_run(tmp_path: Path) -> None:
    out = tmp_path / "denoise"
    stdout = _quick("tools.train_denoise", out)
    assert "epoch 1/1" in stdout and "held-out PSNR" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["task"] == "denoising" and card["torchscript"] == "model.pt"
    assert {"psnr_db", "ssim", "input_psnr_db"} <= set(card["metrics"])
    assert card["cost"]["gflops"] > 0
    pipeline = load_pipeline(EngineSpec(model=str(out / "model.onnx")))
    image = pipeline(np.full((300, 400), 90, np.uint8), "gray8").image
    assert image is not None and image.shape == (300, 400) and image.dtype == np.uint8
    torch_pipeline = load_pipeline(EngineSpec(model=str(out / "model.onnx"), backend="pytorch"))
    assert torch_pipeline(np.full((64, 64), 90, np.uint8), "gray8").image.shape == (64, 64)


@pytest.mark.slow  # a training run
def test_quick_endoscopy_training_run(tmp_path: Path) -> None:
    out = tmp_path / "endo"
    stdout = _quick("tools.train_endo", out)
    assert "epoch 1/1" in stdout and "held-out instrument Dice" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["labels"] == ["background", "instrument"] and card["input"]["channels"] == "bgr"
    assert "instrument" in card["metrics"]["dice"]
    pipeline = load_pipeline(EngineSpec(model=str(out / "model.onnx")))
    mask = pipeline(np.zeros((480, 640, 3), np.uint8), "bgr8").mask
    assert mask is not None and mask.shape == (480, 640)


@pytest.mark.slow  # a training run
def test_quick_detector_training_run(tmp_path: Path) -> None:
    from stream.sources.endoscopy import TOOL_LABELS

    out = tmp_path / "tools"
    stdout = _quick("tools.train_detect", out)
    assert "epoch 1/1" in stdout and "held-out mAP@0.5" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["task"] == "detection" and card["labels"] == TOOL_LABELS
    assert card["output"]["layout"] == "yolo_4+C_N" and card["torchscript"] == "model.pt"
    assert set(card["metrics"]["ap50"]) == set(TOOL_LABELS) and "intended_use" in card
    pipeline = load_pipeline(EngineSpec(model=str(out / "model.onnx"), conf_threshold=0.0))
    boxes = pipeline(np.zeros((480, 640, 3), np.uint8), "bgr8").boxes
    assert boxes and all(0 <= b.label < len(TOOL_LABELS) for b in boxes)  # decoded, in range
