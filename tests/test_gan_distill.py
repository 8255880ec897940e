"""The GAN despeckler and the distillation models: texture measures with known answers, the
scripts' losses and checks, tiny training runs, and the bundled cards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.registry import MODELS_DIR, resolve_model
from tools.image_metrics import gmsd, texture_ratio, texture_variance, texture_windows

ROOT = Path(__file__).resolve().parents[1]


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, speckled, mask): smooth tissue with a bright disc and faint texture; the same
    with multiplicative gamma speckle (4 looks); a mask without the border."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float64)
    clean = 70 + 0.1 * xx + 60 * (np.hypot(yy - 128, xx - 128) < 40)
    clean += cv2.GaussianBlur(rng.normal(0, 6, clean.shape), (0, 0), 1.5)
    speckled = clean * rng.gamma(4.0, 0.25, size=clean.shape)
    mask = np.zeros(clean.shape, bool)
    mask[8:-8, 8:-8] = True
    return np.clip(clean, 0, 255), np.clip(speckled, 0, 255), mask


def test_gmsd_is_zero_for_the_clean_image_and_ranks_speckle_above_mild_blur() -> None:
    clean, speckled, mask = _scene()
    assert gmsd(clean, clean, mask) == pytest.approx(0.0, abs=1e-12)
    blurred = cv2.GaussianBlur(clean, (0, 0), 1.0)
    despeckled = cv2.GaussianBlur(speckled, (0, 0), 3.0)
    assert 0 < gmsd(blurred, clean, mask) < gmsd(despeckled, clean, mask)
    assert gmsd(despeckled, clean, mask) < gmsd(speckled, clean, mask)


def test_texture_ratio_is_one_for_the_clean_image_above_with_speckle_below_when_flattened() -> None:
    clean, speckled, mask = _scene()
    windows = texture_windows(clean, mask, 16)
    assert windows and all(mask[y : y + 16, x : x + 16].all() for y, x in windows)
    yy, xx = np.mgrid[0:256, 0:256]
    disc = np.hypot(yy - 128, xx - 128) < 40
    crossing = [(y, x) for y, x in windows if len(set(disc[y : y + 16, x : x + 16].flat)) > 1]
    assert not crossing  # the disc's edge is structure, not a flat window
    assert texture_ratio(texture_variance(clean, clean, mask)) == pytest.approx(1.0)
    assert texture_ratio(texture_variance(speckled, clean, mask)) > 3
    flat = cv2.GaussianBlur(clean, (0, 0), 4.0)
    assert texture_ratio(texture_variance(flat, clean, mask)) < 0.7
    assert texture_ratio((5.0, 0.0)) == float("inf")
    assert texture_windows(clean, np.zeros_like(mask), 16) == []


def test_distillation_loss_is_zero_when_the_student_matches_and_grows_with_the_gap() -> None:
    torch = pytest.importorskip("torch", reason="needs the train extra")
    from tools.train_distill import distillation_loss

    teacher = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert float(distillation_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    near, far = teacher + 0.1 * torch.randn_like(teacher), torch.zeros_like(teacher)
    assert (
        0
        < float(distillation_loss(near, teacher, 2.0))
        < float(distillation_loss(far, teacher, 2.0))
    )
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(far / 3, 1), torch.log_softmax(teacher / 3, 1), log_target=True,
        reduction="none",
    ).sum(1).mean() * 9  # fmt: skip
    assert float(distillation_loss(far, teacher, 3.0)) == pytest.approx(float(ref), rel=1e-5)


def test_distill_refuses_a_teacher_under_ten_times_the_student() -> None:
    pytest.importorskip("torch", reason="needs the train extra")
    from tools.train_distill import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--teacher-widths", "16,32,48,64", "--student-widths", "8,16,24,32"])
    with pytest.raises(SystemExit):  # a student bigger than us-seg
        parse_args(["--student-widths", "32,64,96,128"])
    assert parse_args([]).teacher_widths == (32, 64, 128, 256)


def test_patch_discriminator_scores_patches() -> None:
    torch = pytest.importorskip("torch", reason="needs the train extra")
    from tools.train_gan_denoise import PatchDiscriminator

    scores = PatchDiscriminator()(torch.rand(2, 1, 64, 96))
    assert scores.shape == (2, 1, 8, 12)


def _quick(module: str, out: Path, *extra: str) -> str:
    cmd = [sys.executable, "-m", module, "--out", str(out), "--quick", "--threads", "1", *extra]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow  # a training run
def test_quick_gan_training_run(tmp_path: Path) -> None:
    out = tmp_path / "gan"
    stdout = _quick("tools.train_gan_denoise", out, "--init", "none")
    assert "epoch 1/1" in stdout and "G adv" in stdout and "texture ratio" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["init"] == "from scratch" and card["torchscript"] == "model.pt"
    assert {"psnr_db", "ssim", "gmsd", "texture_ratio"} <= set(card["metrics"])
    assert (out / "model.pt").is_file()


@pytest.mark.slow  # three training runs
def test_quick_distillation_run(tmp_path: Path) -> None:
    stdout = _quick("tools.train_distill", tmp_path)
    cards = {
        role: json.loads((tmp_path / f"us-seg-{role}" / "card.json").read_text())
        for role in ("teacher", "student", "student-kd")
    }
    assert stdout.count("epoch 1/1") == 3
    teacher, student = (cards[r]["architecture"]["parameters"] for r in ("teacher", "student"))
    assert teacher >= 10 * student
    assert "distillation" in cards["student-kd"]["training"]
    assert "distillation" not in cards["student"]["training"]
    for card in cards.values():
        assert card["metrics"]["frames"] == 1 and card["cost"]["gflops"] > 0


# --- the bundled models (ONNX vs TorchScript: tests/test_engines.py, every model) ---------


def _card(name: str) -> dict:
    return json.loads((MODELS_DIR / name / "card.json").read_text())


def test_bundled_gan_card() -> None:
    card, base = _card("us-denoise-gan"), _card("us-denoise")
    assert card["task"] == "denoising" and card["command"].startswith(
        "python -m tools.train_gan_denoise"
    )
    assert card["architecture"]["parameters"] == base["architecture"]["parameters"]
    training = card["training"]
    assert training["discriminator"]["parameters"] > 0 and "LSGAN" in training["loss"]
    assert isinstance(training["seed"], int) and 0 < training["train_seconds"] < 30 * 60
    metrics = card["metrics"]
    assert metrics["psnr_db"] > metrics["input_psnr_db"] and metrics["gmsd"] < metrics["input_gmsd"]
    assert resolve_model("us-denoise-gan").torchscript_path is not None


def test_bundled_distillation_cards() -> None:
    cards = {r: _card(f"us-seg-{r}") for r in ("teacher", "student", "student-kd")}
    params = {r: c["architecture"]["parameters"] for r, c in cards.items()}
    assert params["teacher"] >= 10 * params["student"] == 10 * params["student-kd"]
    assert params["student"] <= _card("us-seg")["architecture"]["parameters"]
    assert cards["student-kd"]["training"]["distillation"]["teacher"] == "us-seg-teacher"
    assert len({json.dumps(c["normalization"]) for c in cards.values()}) == 1
    for role, card in cards.items():
        assert card["command"].startswith("python -m tools.train_distill"), role
        assert 0 < card["metrics"]["mean_foreground_dice"] <= 1, role
        assert resolve_model(f"us-seg-{role}").torchscript_path is not None, role
    total = sum(c["training"]["train_seconds"] for c in cards.values())
    assert total < 40 * 60  # the budget is 25 min on an idle core; the card says the truth
