"""Train a speckle reducer self-supervised on real, unlabelled ultrasound; ONNX, TorchScript, card.

    python -m tools.train_despeckle_real --out engines/models/us-despeckle-real   # bundled model
    python -m tools.train_despeckle_real --out /tmp/usdr --quick                 # smoke run

Needs the `train` extra (torch, onnx, pydicom, pydicom-data). No clean targets exist for real
scans, so the network learns blind-spot style (Noise2Self / Noise2Void with a structured hole):
in each training crop, one pixel per 8 x 8 cell is a target; a (2 r + 1)^2 block around it is
replaced by pixels from random places of the same crop, so the network cannot see the target
nor its neighbours whose speckle is correlated with it (speckle grains span several pixels);
the loss is the squared error at the targets only. The best such prediction from the context
is the expected intensity without that pixel's speckle: the despeckled image.

Data: the training pictures of tools/real_us_data.py (whole pictures held out for evaluation),
each frame turned grey and resized to 512 x 512 as the pipeline feeds the model, plus copies
at 0.75x and 1.4x for speckle grain sizes of other inputs; random 192 x 192 crops, mirrored.
Same network as us-denoise (tools/denoise_net.py). Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from tools import real_us_data
from tools.denoise_net import DenoiseNet
from tools.eval_real import evaluate_real, held_out_frames
from tools.train_common import (
    add_quick_option,
    architecture_card,
    command_line,
    cost_card,
    deterministic,
    export_onnx,
    forward,
    input_card,
    rounded,
    run_card,
    schedule_card,
    torchscript_from_onnx,
    train,
    versions,
    write_card,
)

SIZE = 512
CROP = 192
CELL = 8  # one target per CELL x CELL cell
SCALES = (1.0, 0.75, 1.4)  # of the 512 x 512 pipeline input
MIN_MEAN = 12.0  # a crop darker than this (background) is drawn again
NOTICE = "Research use only, not for diagnosis"


def training_images(names: tuple[str, ...], limit: int | None) -> list[np.ndarray]:
    """Grey frames of the training scans at 512 x 512 and the other SCALES (uint8)."""
    out = []
    for name in names:
        for frame in real_us_data.frames(name, limit=limit):
            base = cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            for s in SCALES:
                side = max(CROP, round(SIZE * s))
                out.append(
                    base
                    if s == 1.0
                    else cv2.resize(base, (side, side), interpolation=cv2.INTER_LINEAR)
                )
    return out


def crop(rng: np.random.Generator, images: list[np.ndarray]) -> np.ndarray:
    """A random CROP x CROP crop (mirrored at random) with some tissue in it, float32 / 255."""
    for _ in range(20):
        img = images[int(rng.integers(len(images)))]
        y0 = int(rng.integers(0, img.shape[0] - CROP + 1))
        x0 = int(rng.integers(0, img.shape[1] - CROP + 1))
        c = img[y0 : y0 + CROP, x0 : x0 + CROP]
        if c.mean() >= MIN_MEAN:
            break
    if rng.random() < 0.5:
        c = c[:, ::-1]
    return c.astype(np.float32) / 255


def blind_spot(
    rng: np.random.Generator, clean: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """(masked crop, target mask): one target per CELL x CELL cell; a (2 radius + 1)^2 block
    around each replaced by pixels from random places of the crop."""
    h, w = clean.shape
    masked = clean.copy()
    targets = np.zeros((h, w), bool)
    ys = np.arange(0, h, CELL)[:, None] + rng.integers(0, CELL, size=(h // CELL, w // CELL))
    xs = np.arange(0, w, CELL)[None, :] + rng.integers(0, CELL, size=(h // CELL, w // CELL))
    targets[ys, xs] = True
    hole = cv2.dilate(targets.astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8)) > 0
    n = int(hole.sum())
    masked[hole] = clean[rng.integers(0, h, n), rng.integers(0, w, n)]
    return masked, targets


def batch(
    rng: np.random.Generator, images: list[np.ndarray], size: int, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masked input, noisy crop, target mask): N x 1 x CROP x CROP each."""
    xs, ys, ms = [], [], []
    for _ in range(size):
        c = crop(rng, images)
        m, t = blind_spot(rng, c, radius)
        xs.append(m)
        ys.append(c)
        ms.append(t)
    return np.stack(xs)[:, None], np.stack(ys)[:, None], np.stack(ms)[:, None]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="engines/models/us-despeckle-real", help="output folder")
    p.add_argument("--name", default="us-despeckle-real", help="model name in the card")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--seed", type=int, default=0, help="torch / sampling seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="fp32")
    p.add_argument("--radius", type=int, default=3, help="blind-spot hole: (2 r + 1)^2 pixels")
    p.add_argument("--eval-every", type=int, default=4, help="held-out: every Nth cine frame")
    p.add_argument("--latency-runs", type=int, default=50)
    add_quick_option(p)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.steps_per_epoch, args.batch = 1, 2, 2
        args.eval_every, args.latency_runs = 30, 3
    for name in ("epochs", "steps_per_epoch", "batch", "threads", "radius", "eval_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    from tools.eval_common import score_and_time

    args = parse_args(argv)
    out_dir = Path(args.out)
    command = command_line("tools.train_despeckle_real", argv)
    started = time.perf_counter()
    rng = deterministic(args.seed, args.threads)
    cv2.setNumThreads(1)

    images = training_images(real_us_data.TRAIN, limit=1 if args.quick else None)
    pixels = np.concatenate([i.ravel() for i in images]).astype(np.float32) / 255
    mean, std = round(float(pixels.mean()), 4), round(float(pixels.std()), 4)
    del pixels
    print(
        f"data: {len(images)} images from {', '.join(real_us_data.TRAIN)}; mean {mean} std {std}",
        flush=True,
    )

    model = DenoiseNet(mean, std)

    def step_loss() -> torch.Tensor:
        x, y, m = batch(rng, images, args.batch, args.radius)
        pred = forward(model, torch.from_numpy((x - mean) / std), args.precision)
        mask = torch.from_numpy(m)
        return ((pred - torch.from_numpy(y))[mask] ** 2).mean()

    train_seconds = train(
        model,
        step_loss,
        lambda losses: f"blind-spot RMSE {np.sqrt(np.mean(losses)) * 255:.2f} levels",
        args.epochs,
        args.steps_per_epoch,
        args.lr,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    export_onnx(model, onnx_path, torch.zeros(1, 1, SIZE, SIZE), "image", "denoised")
    diff = torchscript_from_onnx(
        DenoiseNet(mean, std), onnx_path, out_dir / "model.pt", torch.rand(1, 1, SIZE, SIZE)
    )
    print(f"exported {onnx_path} and model.pt; max |torchscript - onnx| {diff:.2e}", flush=True)

    train_files = [real_us_data.scan(n) for n in real_us_data.TRAIN]
    held_files = [real_us_data.scan(n) for n in real_us_data.HELD_OUT]
    card: dict = {
        "name": args.name,
        "task": "denoising",
        "description": "Ultrasound speckle reduction for real B-mode frames, trained "
        "self-supervised (blind-spot, no clean targets) on real scans that ship in pydicom-data.",
        "labels": [],
        "input": input_card("gray", SIZE, SIZE),
        "normalization": {"mean": [mean], "std": [std], "applied_to": "pixel / 255"},
        "output": {
            "name": "denoised",
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "gray",
            "scale": 255.0,
            "height": SIZE,
            "width": SIZE,
            "postprocess": "pixel = clip(round(255 x output), 0, 255), bilinear resize to the frame",
        },
        "torchscript": "model.pt",
        "architecture": architecture_card("DenoiseNet (tools/denoise_net.py)", model),
        "intended_use": "Reducing speckle in grey B-mode ultrasound frames for display and as a "
        "preprocessing step, in research pipelines. The output is a smoothed picture, not a "
        "measurement; it may soften small or faint structures.",
        "training_data": "Real, unlabelled ultrasound frames that ship in Python packages: "
        + "; ".join(f"{s.package} {s.file} ({s.picture}, {s.what})" for s in train_files)
        + ". Held out, never trained on: "
        + "; ".join(f"{s.package} {s.file} ({s.picture})" for s in held_files)
        + ".",
        "notice": NOTICE,
        "training": {
            "method": "blind-spot self-supervision (Noise2Self / Noise2Void with a structured "
            f"hole): one target pixel per {CELL}x{CELL} cell, the {2 * args.radius + 1}x"
            f"{2 * args.radius + 1} block around it replaced by pixels from random places of the "
            "crop; squared error at the targets only",
            "data": "tools/real_us_data.py TRAIN scans, grey (BT.601), resized to 512x512 "
            f"(cv2.INTER_LINEAR) and also scaled {SCALES[1:]}",
            "train_scans": list(real_us_data.TRAIN),
            "held_out_scans": list(real_us_data.HELD_OUT),
            "images": len(images),
            "crop": f"{CROP}x{CROP} random crops with mean >= {MIN_MEAN:g} levels, left-right mirror",
            "blind_spot_radius": args.radius,
            **schedule_card(args),
            "loss": "MSE at the blind-spot targets (pixel / 255 units)",
            **run_card(args, train_seconds),
        },
        "command": command,
        "versions": versions(),
    }
    write_card(out_dir / "card.json", card)

    held = held_out_frames(args.eval_every)
    metrics, latency = score_and_time(
        str(onnx_path),
        lambda pipeline: evaluate_real(pipeline, held),
        held[0].image,
        "gray8",
        args.latency_runs,
        warmup=min(10, args.latency_runs),
    )
    card["metrics"] = {
        "data": f"held-out real scans {', '.join(real_us_data.HELD_OUT)} (every "
        f"{args.eval_every}th cine frame), grey, through the ONNX pipeline at the frame's size",
        "definition": "no reference (tools/eval_real.py): ENL in automatically chosen homogeneous "
        "windows, CNR between the brightest and darkest of them, edge preservation at the input's "
        "strongest smoothed edges (identity = 1); gains relative to the input",
        **rounded(metrics, 3),
    }
    card["cost"] = cost_card(
        onnx_path, "512x512", "held-out real frame", latency, "tools.eval_real"
    )
    write_card(out_dir / "card.json", card)
    print(
        f"held-out ENL gain {metrics['enl_gain']:.2f}, CNR gain {metrics['cnr_gain']:.2f}, "
        f"edge preservation {metrics['edge_preservation']:.3f}; "
        f"{latency['pipeline_median_ms']:.2f} ms median; "
        f"total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
