"""Train a speckle reducer self-supervised on real, unlabelled ultrasound; ONNX, TorchScript, card.

    python -m tools.train_despeckle_real --out engines/models/us-despeckle-real   # bundled model
    python -m tools.train_despeckle_real --out /tmp/usdr --quick                 # smoke run

Needs the `train` extra (torch, onnx, pydicom, pydicom-data). No clean targets exist for real
scans, so the network learns blind-spot style (Noise2Self / Noise2Void with a structured hole):
in each training crop, one pixel per 8 x 8 cell is a target; a (2 r + 1)^2 block around it is
replaced by the mean of the visible pixels around the block, so the network cannot see the target
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
from tools.card_info import NOTICE
from tools.denoise_net import DenoiseNet
from tools.eval_common import score_and_time
from tools.eval_real import evaluate_real, held_out_frames
from tools.train_common import (
    cost_card,
    denoiser_card_head,
    export_model,
    forward,
    rounded,
    run_card,
    schedule_card,
    start_run,
    train,
    training_parser,
    versions,
    write_card,
)

SIZE = 512
CROP = 192
CELL = 8  # one target per CELL x CELL cell
SCALES = (1.0, 0.75, 1.4)  # of the 512 x 512 pipeline input
MIN_MEAN = 12.0  # a crop darker than this (background) is drawn again


def training_images(
    names: tuple[str, ...], limit: int | None, scales: tuple[float, ...] = SCALES
) -> list[np.ndarray]:
    """Grey frames of the training scans at 512 x 512 and the other `scales` (uint8)."""
    out = []
    for name in names:
        for frame in real_us_data.frames(name, limit=limit):
            base = cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            for s in scales:
                side = max(CROP, round(SIZE * s))
                out.append(
                    base
                    if s == 1.0
                    else cv2.resize(base, (side, side), interpolation=cv2.INTER_LINEAR)
                )
    return out


def tissue_crop(
    rng: np.random.Generator, images: list[np.ndarray], *alike: list[np.ndarray]
) -> list[np.ndarray]:
    """A random CROP x CROP window of one of `images` with some tissue in it (the last of 20
    draws otherwise) and the same window of the same item of each of `alike`, all mirrored
    left-right together with probability 1/2."""
    for _ in range(20):
        i = int(rng.integers(len(images)))
        y0 = int(rng.integers(0, images[i].shape[0] - CROP + 1))
        x0 = int(rng.integers(0, images[i].shape[1] - CROP + 1))
        window = (slice(y0, y0 + CROP), slice(x0, x0 + CROP))
        if images[i][window].mean() >= MIN_MEAN:
            break
    crops = [a[i][window] for a in (images, *alike)]
    return [c[:, ::-1] for c in crops] if rng.random() < 0.5 else crops


def fill_holes(image: np.ndarray, targets: np.ndarray, radius: int) -> np.ndarray:
    """`image` with the (2 radius + 1)^2 block around each `targets` pixel hidden: each hole
    pixel replaced by the mean of the visible pixels of the (4 radius + 3)^2 box around it
    (context only, nothing of the hidden speckle, no bias)."""
    hole = cv2.dilate(targets.astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8)) > 0
    k = (4 * radius + 3,) * 2
    seen = (~hole).astype(np.float32)
    num = cv2.boxFilter(image * seen, -1, k, normalize=False, borderType=cv2.BORDER_REFLECT)
    den = cv2.boxFilter(seen, -1, k, normalize=False, borderType=cv2.BORDER_REFLECT)
    out = image.copy()
    out[hole] = (num[hole] / np.maximum(den[hole], 1.0)).astype(image.dtype)
    return out


def blind_spot(
    rng: np.random.Generator, noisy: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """(masked crop, target mask): one target per CELL x CELL cell; a (2 radius + 1)^2 block
    around each replaced by its surroundings' mean (`fill_holes`)."""
    h, w = noisy.shape
    targets = np.zeros((h, w), bool)
    ys = np.arange(0, h, CELL)[:, None] + rng.integers(0, CELL, size=(h // CELL, w // CELL))
    xs = np.arange(0, w, CELL)[None, :] + rng.integers(0, CELL, size=(h // CELL, w // CELL))
    targets[ys, xs] = True
    return fill_holes(noisy, targets, radius), targets


def batch(
    rng: np.random.Generator, images: list[np.ndarray], size: int, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masked input, noisy crop, target mask): N x 1 x CROP x CROP each."""
    xs, ys, ms = [], [], []
    for _ in range(size):
        c = tissue_crop(rng, images)[0].astype(np.float32) / 255
        m, t = blind_spot(rng, c, radius)
        xs.append(m)
        ys.append(c)
        ms.append(t)
    return np.stack(xs)[:, None], np.stack(ys)[:, None], np.stack(ms)[:, None]


def blind_spot_estimate(
    model: torch.nn.Module,
    image: np.ndarray,
    radius: int,
    mean: float,
    std: float,
) -> np.ndarray:
    """The blind-spot network's estimate of every pixel of a uint8 frame, each predicted with
    its own (2 radius + 1)^2 neighbourhood hidden (CELL^2 masked passes, one per grid phase):
    no pixel's own speckle leaks into its estimate. float32, pixel / 255."""
    h, w = image.shape
    ph, pw = -h % 64, -w % 64
    x = np.pad(image.astype(np.float32) / 255, ((0, ph), (0, pw)), mode="reflect")
    est = np.zeros_like(x)
    model.eval()
    with torch.no_grad():
        for py in range(CELL):
            for px in range(CELL):
                targets = np.zeros(x.shape, bool)
                targets[py::CELL, px::CELL] = True
                masked = fill_holes(x, targets, radius)
                pred = model(torch.from_numpy((masked - mean) / std)[None, None])[0, 0].numpy()
                est[targets] = pred[targets]
    model.train()
    return np.clip(est[:h, :w], 0, 1)


def pair_batch(
    rng: np.random.Generator, noisy: list[np.ndarray], targets: list[np.ndarray], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """`size` random (noisy, blind-spot estimate) crop pairs, mirrored at random, N x 1 x C x C."""
    xs, ys = [], []
    for _ in range(size):
        a, b = tissue_crop(rng, noisy, targets)
        xs.append(a.astype(np.float32) / 255)
        ys.append(b)
    return np.stack(xs)[:, None], np.stack(ys)[:, None]


def distill(
    model: torch.nn.Module,
    images: list[np.ndarray],
    rng: np.random.Generator,
    args: argparse.Namespace,
    mean: float,
    std: float,
) -> None:
    """Stage 2 (see main): fit noisy -> the blind-spot estimates of the training images."""
    t0 = time.perf_counter()
    estimates = [blind_spot_estimate(model, img, args.radius, mean, std) for img in images]
    print(f"blind-spot estimates of {len(images)} images ({time.perf_counter() - t0:.0f} s)")

    def distill_loss() -> torch.Tensor:
        x, y = pair_batch(rng, images, estimates, args.batch)
        pred = forward(model, torch.from_numpy((x - mean) / std), args.precision)
        return ((pred - torch.from_numpy(y)) ** 2).mean()

    train(
        model,
        distill_loss,
        lambda losses: f"distil RMSE {np.sqrt(np.mean(losses)) * 255:.2f} levels",
        args.distill_epochs,
        args.steps_per_epoch,
        args.lr / 3,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "us-despeckle-real", epochs=24, lr=3e-3, train_seeds=None)
    p.set_defaults(batch=8, threads=1, precision="fp32")
    p.add_argument("--radius", type=int, default=3, help="blind-spot hole: (2 r + 1)^2 pixels")
    p.add_argument(
        "--distill-epochs", type=int, default=10, help="stage 2: on the blind-spot estimates"
    )
    p.add_argument("--eval-every", type=int, default=4, help="held-out: every Nth cine frame")
    p.add_argument("--latency-runs", type=int, default=50)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.steps_per_epoch, args.batch, args.distill_epochs = 1, 2, 2, 1
        args.eval_every, args.latency_runs = 30, 3
    if args.distill_epochs < 0:
        p.error("--distill-epochs must be >= 0")
    for name in ("epochs", "steps_per_epoch", "batch", "threads", "radius", "eval_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, started, rng = start_run("tools.train_despeckle_real", args, argv)
    cv2.setNumThreads(1)

    if args.quick:  # one frame per scan at the pipeline's scale only
        images = training_images(real_us_data.TRAIN, limit=1, scales=(1.0,))
    else:
        images = training_images(real_us_data.TRAIN, limit=None)
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

    train_started = time.perf_counter()
    train(
        model,
        step_loss,
        lambda losses: f"blind-spot RMSE {np.sqrt(np.mean(losses)) * 255:.2f} levels",
        args.epochs,
        args.steps_per_epoch,
        args.lr,
    )

    # Stage 2: the blind-spot network sees a masked input in training but the whole frame in
    # use, and leaks a grid pattern (the 4 x 4 pixel shuffle) there. So its leak-free masked
    # estimate of every training pixel becomes the target of a plain noisy -> estimate fit
    # of the same network, which then runs on whole frames as it was trained.
    if args.distill_epochs > 0:
        distill(model, images, rng, args, mean, std)
    train_seconds = time.perf_counter() - train_started

    fresh = DenoiseNet(mean, std)
    onnx_path, _ = export_model(model, fresh, args.out, (1, 1, SIZE, SIZE), "denoised")

    train_files = [real_us_data.scan(n) for n in real_us_data.TRAIN]
    held_files = [real_us_data.scan(n) for n in real_us_data.HELD_OUT]
    card: dict = {
        **denoiser_card_head(
            args.name,
            "Ultrasound speckle reduction for real B-mode frames, trained "
            "self-supervised (blind-spot, no clean targets) on real scans that ship in pydicom-data.",
            model,
            SIZE,
            mean,
            std,
        ),
        "intended_use": "Reducing speckle in grey B-mode ultrasound frames for display and as a "
        "preprocessing step, in research pipelines. The output is a smoothed picture, not a "
        "measurement; it may soften small or faint structures.",
        "training_data": "Real, unlabelled ultrasound frames from pydicom / pydicom-data: "
        + "; ".join(f"{s.file} ({s.picture})" for s in train_files)
        + ". Held out: "
        + "; ".join(s.file for s in held_files)
        + " (details: training.train_scans, training.held_out_scans).",
        "notice": NOTICE,
        "training": {
            "method": "blind-spot self-supervision (Noise2Self / Noise2Void with a structured "
            f"hole): one target pixel per {CELL}x{CELL} cell, the {2 * args.radius + 1}x"
            f"{2 * args.radius + 1} block around it replaced by the mean of the visible pixels "
            f"of the {4 * args.radius + 3}x{4 * args.radius + 3} box around each hole pixel; "
            "squared error at the targets only",
            "data": "tools/real_us_data.py TRAIN scans, grey (BT.601), resized to 512x512 "
            f"(cv2.INTER_LINEAR) and also scaled {SCALES[1:]}",
            "train_scans": list(real_us_data.TRAIN),
            "held_out_scans": list(real_us_data.HELD_OUT),
            "images": len(images),
            "crop": f"{CROP}x{CROP} random crops with mean >= {MIN_MEAN:g} levels, left-right mirror",
            "blind_spot_radius": args.radius,
            **schedule_card(args),
            "loss": "MSE at the blind-spot targets (pixel / 255 units)",
            "distillation": "none (--distill-epochs 0)"
            if args.distill_epochs == 0
            else "stage 2: every training pixel's blind-spot estimate (the network "
            f"on {CELL * CELL} masked copies, one per grid phase, each pixel predicted with its "
            f"{2 * args.radius + 1}x{2 * args.radius + 1} neighbourhood hidden) becomes the "
            f"target of a noisy -> estimate MSE fit of the same network, {args.distill_epochs} "
            f"epochs at lr {args.lr / 3:.4g}: the network then runs on whole frames as trained "
            "(the masked-input network leaves a 4x4 grid pattern on whole frames)",
            "distill_epochs": args.distill_epochs,
            **run_card(args, train_seconds),
        },
        "command": command,
        "versions": versions(),
    }
    write_card(args.out / "card.json", card)

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
        "data": f"held-out real scans {', '.join(real_us_data.EVALUATED)} (every "
        f"{args.eval_every}th cine frame), grey, through the ONNX pipeline at the frame's size",
        "definition": "no reference (tools/eval_real.py): ENL in automatically chosen homogeneous "
        "windows, CNR between the brightest and darkest of them, edge preservation at the input's "
        "strongest smoothed edges (identity = 1); gains relative to the input",
        **rounded(metrics, 3),
    }
    card["cost"] = cost_card(
        onnx_path, "512x512", "held-out real frame", latency, "tools.eval_real"
    )
    write_card(args.out / "card.json", card)
    print(
        f"held-out ENL gain {metrics['enl_gain']:.2f}, CNR gain {metrics['cnr_gain']:.2f}, "
        f"edge preservation {metrics['edge_preservation']:.3f}; "
        f"{latency['pipeline_median_ms']:.2f} ms median; "
        f"total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
