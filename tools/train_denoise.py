"""Train the bundled speckle-reduction model on synthetic phantoms; export ONNX, TorchScript, card.

    python -m tools.train_denoise --out engines/models/us-denoise     # the bundled model
    python -m tools.train_denoise --out /tmp/us-denoise --quick       # smoke run, seconds
    python -m tools.train_denoise --out engines/models/us-denoise-v2 --name us-denoise-v2 \
        --loss mse --speckle-range 0.5,1.2 --widths 48,96,128,160 --blocks 2 --threads 1

Needs the `train` extra. Pairs come from `stream.sources.phantom` at its default speckle, or with
`--speckle-range LO,HI` at levels spread evenly from LO to HI over the training seeds (one level
per seed) (512 x 512 noisy frame, the same frame without speckle as the target). Training uses
random 256 x 256 crops (the network is fully convolutional) with L1 loss (`--loss mse`: squared
error, what PSNR measures); the model runs at 512 x 512.
The card's PSNR / SSIM come from held-out seeds through the exported ONNX model and the real
pipeline (tools/eval_denoise.py). Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from stream.sources.phantom import phantom_frame
from tools.card_info import fill_card_info
from tools.denoise_net import DenoiseNet
from tools.eval_common import score_and_time
from tools.eval_denoise import evaluate_denoise
from tools.eval_seg import phantom_card, phantom_set, spec_for_seed
from tools.train_common import (
    add_held_out_options,
    check_training_args,
    cost_card,
    denoiser_card_head,
    export_model,
    forward,
    four_widths,
    load_onnx_weights,
    parse_training_args,
    random_crops,
    rounded,
    run_card,
    schedule_card,
    seed_text,
    seeds_card,
    start_run,
    train,
    training_parser,
    versions,
    write_card,
)

SIZE = 512
CROP = 256
INIT_TEXT = "fine-tuned from {} (BatchNorm folded into the convolutions, kept in eval mode)"
LOSS_TEXT = {"l1": "L1 (pixel / 255 units)", "mse": "mean squared error (pixel / 255 units)"}


def speckle_card(levels: tuple[float, float] | None) -> dict:
    """The card's note on the training speckle (none when only the phantom default was used)."""
    if levels is None:
        return {}
    return {"speckle_levels": f"{levels[0]:g} to {levels[1]:g}, spread evenly over the seeds"}


def speckle_levels(seeds: list[int], levels: tuple[float, float] | None) -> dict[int, float]:
    """The phantom speckle of each training seed: 1.0, or spread evenly over `levels` (lo, hi)."""
    if levels is None:
        return dict.fromkeys(seeds, 1.0)
    lo, hi = levels
    step = (hi - lo) / max(len(seeds) - 1, 1)
    return {seed: round(lo + i * step, 4) for i, seed in enumerate(seeds)}


def make_pairs(
    seeds: list[int], frames_per_seed: int, levels: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean): N x 512 x 512 uint8 each; speckle per seed from `speckle_levels`."""
    speckle = speckle_levels(seeds, levels)
    noisy, clean = [], []
    for spec, index in phantom_set(seeds, frames_per_seed):
        frame = phantom_frame(replace(spec, speckle=speckle[spec.seed]), index)
        noisy.append(frame.image)
        clean.append(frame.clean)
    return np.stack(noisy), np.stack(clean)


def denoise_data(
    args: argparse.Namespace, started: float, levels: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(noisy, clean, mean, std): `make_pairs` of the training seeds, and the rounded mean and
    std of the noisy frames (pixel / 255)."""
    noisy, clean = make_pairs(args.train_seeds, args.frames_per_seed, levels)
    x_all = noisy.astype(np.float32) / 255
    mean, std = round(float(x_all.mean()), 4), round(float(x_all.std()), 4)
    print(
        f"data: {len(noisy)} pairs, mean {mean} std {std} ({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    return noisy, clean, mean, std


def pairs_card(args: argparse.Namespace, levels: tuple[float, float] | None = None) -> dict:
    """The card's `training` fields on the data: phantom pairs, seeds, crops."""
    return {
        "data": "stream.sources.phantom 512x512: noisy frame -> the same frame without speckle",
        **phantom_card(),
        **speckle_card(levels),
        **seeds_card(args),
        "crop": f"{CROP}x{CROP} random crops, left-right mirror",
    }


def batch(
    rng: np.random.Generator, noisy: np.ndarray, clean: np.ndarray, size: int, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """`size` random crops (mirrored at random) as float32 N x 1 x crop x crop, pixel / 255."""
    x, y = random_crops(rng, noisy, clean, size, crop)
    return x[:, None].astype(np.float32) / 255, y[:, None].astype(np.float32) / 255


def _level_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not 0 < lo <= hi <= 3:
        raise argparse.ArgumentTypeError(f"need 0 < LO <= HI <= 3, got {text!r}")
    return lo, hi


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "us-denoise", epochs=40, lr=3e-3, train_seeds="0-63")
    add_held_out_options(p, frames_per_seed=8, latency_runs=100)
    p.add_argument("--loss", choices=("l1", "mse"), default="l1", help="training loss")
    p.add_argument(
        "--speckle-range",
        type=_level_range,
        default=None,
        help="LO,HI: train on phantom speckle levels spread over LO..HI (default: 1.0 only)",
    )
    p.add_argument(
        "--widths", type=four_widths, default=(48, 64, 80, 96), help="a,b,c,d: DenoiseNet widths"
    )
    p.add_argument(
        "--blocks", type=int, default=1, help="DenoiseNet blocks per level at 1/8 to 1/32"
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this ONNX model's weights (same --widths and --blocks), e.g. "
        "engines/models/us-denoise/model.onnx",
    )
    args = parse_training_args(p, argv)
    if args.init is not None and not args.init.is_file():
        p.error(f"--init: no file {args.init}")
    if args.blocks < 1:
        p.error("--blocks must be >= 1")
    check_training_args(p, args, args.test_seeds)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, started, rng = start_run("tools.train_denoise", args, argv)

    noisy, clean, mean, std = denoise_data(args, started, args.speckle_range)
    model = DenoiseNet(mean, std, args.widths, args.blocks)
    if args.init is not None:  # BatchNorm folded into the convolutions: fine-tune in eval mode
        load_onnx_weights(model, args.init)

    def step_loss() -> torch.Tensor:
        x, y = batch(rng, noisy, clean, args.batch, CROP)
        out = forward(model, torch.from_numpy((x - mean) / std), args.precision)
        err = out - torch.from_numpy(y)
        return err.square().mean() if args.loss == "mse" else err.abs().mean()

    def note(losses: list[float]) -> str:
        if args.loss == "mse":
            return f"RMSE {np.sqrt(np.mean(losses)) * 255:.3f} levels"
        return f"L1 {np.mean(losses) * 255:.3f} levels"

    train_seconds = train(model, step_loss, note, args.epochs, args.steps_per_epoch, args.lr)
    fresh = DenoiseNet(mean, std, args.widths, args.blocks)
    onnx_path, _ = export_model(model, fresh, args.out, (1, 1, SIZE, SIZE), "denoised")

    card: dict = {
        **denoiser_card_head(
            args.name,
            "Ultrasound speckle reduction: noisy B-mode frame -> clean estimate, "
            "trained only on medstream's synthetic phantom (noisy / speckle-free pairs).",
            model,
            SIZE,
            mean,
            std,
        ),
        "training": {
            **pairs_card(args, args.speckle_range),
            **schedule_card(args),
            "loss": LOSS_TEXT[args.loss],
            **run_card(args, train_seconds),
        },
        "command": command,
        "versions": versions(),
    }
    if args.blocks != 1:
        card["architecture"]["blocks"] = args.blocks
    if args.init is not None:
        card["training"]["init"] = INIT_TEXT.format(args.init)
    if args.speckle_range is not None:
        card["training"]["phantom"]["speckle"] = "per seed: see speckle_levels"
    fill_card_info(card, args.name)  # a bundled model's intended use, training data, notice
    metrics, latency = score_denoiser(
        args, onnx_path, card, "SSIM 11x11 Gaussian window (tools/image_metrics.py)"
    )
    print(
        f"held-out PSNR {metrics['psnr_db']:.2f} dB (input {metrics['input_psnr_db']:.2f}), "
        f"SSIM {metrics['ssim']:.3f} (input {metrics['input_ssim']:.3f}); "
        f"{card['cost']['gflops']} GFLOPs, {latency['pipeline_median_ms']:.2f} ms median; "
        f"total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


def score_denoiser(
    args: argparse.Namespace, onnx_path: Path, card: dict, measures: str
) -> tuple[dict, dict]:
    """Write the card (the pipeline loads it), then score the trained denoiser on the held-out
    phantom seeds through the ONNX pipeline and time it; the card gains `metrics` (`measures`
    says how SSIM and the rest are defined) and `cost`, and is written. Returns (metrics,
    latency)."""
    write_card(args.out / "card.json", card)
    metrics, latency = score_and_time(
        str(onnx_path),
        lambda pipeline: evaluate_denoise(
            pipeline, phantom_set(args.test_seeds, args.test_frames_per_seed)
        ),
        phantom_frame(spec_for_seed(args.test_seeds[0]), 0).image,
        "gray8",
        args.latency_runs,
        warmup=min(10, args.latency_runs),
    )
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 512x512, through the ONNX pipeline",
        "definition": "vs the phantom's clean image, inside the field of view; PSNR from the MSE "
        f"pooled over all frames; {measures}",
        **rounded(metrics, 3),
    }
    card["cost"] = cost_card(onnx_path, "512x512", "512x512 gray8", latency, "tools.eval_denoise")
    write_card(args.out / "card.json", card)
    return metrics, latency


if __name__ == "__main__":
    main()
