"""Train the bundled speckle-reduction model on synthetic phantoms; export ONNX, TorchScript, card.

    python -m tools.train_denoise --out engines/models/us-denoise     # the bundled model
    python -m tools.train_denoise --out /tmp/us-denoise --quick       # smoke run, seconds

Needs the `train` extra. Pairs come from `stream.sources.phantom` at its default speckle
(512 x 512 noisy frame, the same frame without speckle as the target). Training uses random
256 x 256 crops (the network is fully convolutional) with L1 loss; the model runs at 512 x 512.
The card's PSNR / SSIM come from held-out seeds through the exported ONNX model and the real
pipeline (tools/eval_denoise.py). Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch

from engines import EngineSpec, load_pipeline
from stream.sources.phantom import phantom_frame
from tools.denoise_net import DenoiseNet
from tools.eval_common import FRAME_STRIDE, measure_latency, parse_seeds
from tools.eval_denoise import evaluate_denoise
from tools.eval_seg import phantom_set, spec_for_seed
from tools.onnx_flops import count_flops
from tools.train_common import (
    cpu_name,
    export_onnx,
    rounded,
    seed_text,
    torchscript_from_onnx,
    versions,
    write_card,
)

SIZE = 512
CROP = 256


def make_pairs(seeds: list[int], frames_per_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean): N x 512 x 512 uint8 each."""
    noisy, clean = [], []
    for spec, index in phantom_set(seeds, frames_per_seed):
        frame = phantom_frame(spec, index)
        noisy.append(frame.image)
        clean.append(frame.clean)
    return np.stack(noisy), np.stack(clean)


def batch(
    rng: np.random.Generator, noisy: np.ndarray, clean: np.ndarray, size: int, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """`size` random crops (mirrored at random) as float32 N x 1 x crop x crop, pixel / 255."""
    idx = rng.choice(len(noisy), size=min(size, len(noisy)), replace=False)
    xs, ys = [], []
    for i in idx:
        y0, x0 = (int(v) for v in rng.integers(0, SIZE - crop + 1, size=2))
        sl = (i, slice(y0, y0 + crop), slice(x0, x0 + crop))
        a, b = noisy[sl], clean[sl]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        xs.append(a)
        ys.append(b)
    return (
        np.stack(xs)[:, None].astype(np.float32) / 255,
        np.stack(ys)[:, None].astype(np.float32) / 255,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("engines/models/us-denoise"))
    p.add_argument("--name", default="us-denoise", help="model name in the card")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--train-seeds", type=parse_seeds, default=parse_seeds("0-63"))
    p.add_argument("--test-seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    p.add_argument("--frames-per-seed", type=int, default=8)
    p.add_argument("--test-frames-per-seed", type=int, default=4)
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="one tiny epoch on a few frames (tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.steps_per_epoch, args.batch = 1, 2, 2
        args.train_seeds, args.test_seeds = [0, 1], [2000]
        args.frames_per_seed, args.test_frames_per_seed, args.latency_runs = 2, 1, 3
    for name in ("epochs", "steps_per_epoch", "batch", "threads", "frames_per_seed"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if set(args.train_seeds) & set(args.test_seeds):
        p.error("training seeds overlap held-out seeds")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(
        ["python", "-m", "tools.train_denoise", *(sys.argv[1:] if argv is None else argv)]
    )
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    noisy, clean = make_pairs(args.train_seeds, args.frames_per_seed)
    x_all = noisy.astype(np.float32) / 255
    mean, std = round(float(x_all.mean()), 4), round(float(x_all.std()), 4)
    del x_all
    print(
        f"data: {len(noisy)} pairs, mean {mean} std {std} ({time.perf_counter() - started:.1f} s)"
    )

    model = DenoiseNet(mean, std)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * args.steps_per_epoch, pct_start=0.15
    )
    train_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        losses = []
        for _ in range(args.steps_per_epoch):
            x, y = batch(rng, noisy, clean, args.batch, CROP)
            xt = torch.from_numpy((x - mean) / std)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                out = model(xt).float()
            loss = (out - torch.from_numpy(y)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        print(
            f"epoch {epoch}/{args.epochs}  L1 {np.mean(losses) * 255:.3f} levels  "
            f"({time.perf_counter() - train_start:.0f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - train_start

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    example = torch.zeros(1, 1, SIZE, SIZE)
    export_onnx(model, onnx_path, example, "image", "denoised")
    diff = torchscript_from_onnx(
        DenoiseNet(mean, std), onnx_path, args.out / "model.pt", torch.rand(1, 1, SIZE, SIZE)
    )
    print(f"exported {onnx_path} and model.pt; max |torchscript - onnx| {diff:.2e}", flush=True)

    card: dict = {
        "name": args.name,
        "task": "denoising",
        "description": "Ultrasound speckle reduction: noisy B-mode frame -> clean estimate, "
        "trained only on medstream's synthetic phantom (noisy / speckle-free pairs).",
        "labels": [],
        "input": {
            "name": "image",
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "gray",
            "height": SIZE,
            "width": SIZE,
            "batch": "dynamic",
            "resize": "bilinear, half-pixel (cv2.INTER_LINEAR) from the frame; see engines/preprocess.py",
        },
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
        "architecture": {
            "name": "DenoiseNet (tools/denoise_net.py)",
            "widths": list(model.widths),
            "parameters": params,
            "opset": 17,
        },
        "training": {
            "data": "stream.sources.phantom 512x512: noisy frame -> the same frame without speckle",
            "phantom": {
                k: v for k, v in asdict(spec_for_seed(0)).items() if k not in ("seed", "geometry")
            },
            "geometry": "even seeds sector, odd seeds linear",
            "train_seeds": seed_text(args.train_seeds),
            "frames_per_seed": args.frames_per_seed,
            "frame_indices": f"0, {FRAME_STRIDE}, {2 * FRAME_STRIDE}, ...",
            "crop": f"{CROP}x{CROP} random crops, left-right mirror",
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "batch": args.batch,
            "optimizer": f"AdamW lr {args.lr} one-cycle, weight decay 1e-4",
            "loss": "L1 (pixel / 255 units)",
            "seed": args.seed,
            "threads": args.threads,
            "precision": args.precision,
            "train_seconds": round(train_seconds, 1),
        },
        "command": command,
        "versions": versions(),
    }
    write_card(args.out / "card.json", card)

    cv2.setNumThreads(1)
    pipeline = load_pipeline(EngineSpec(model=str(onnx_path), backend="onnxruntime", threads=1))
    metrics = evaluate_denoise(pipeline, phantom_set(args.test_seeds, args.test_frames_per_seed))
    latency = measure_latency(
        pipeline,
        phantom_frame(spec_for_seed(args.test_seeds[0]), 0).image,
        runs=args.latency_runs,
        warmup=min(10, args.latency_runs),
    )
    pipeline.close()
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 512x512, through the ONNX pipeline",
        "definition": "vs the phantom's clean image, inside the field of view; PSNR from the MSE "
        "pooled over all frames; SSIM 11x11 Gaussian window (tools/image_metrics.py)",
        **rounded(metrics, 3),
    }
    card["cost"] = {
        "gflops": round(count_flops(onnx_path).gflops, 4),
        "gflops_definition": "2 x multiply-accumulates of Conv/Gemm/MatMul, batch 1, 512x512 input",
        "latency_ms": rounded(latency, 3),
        "latency_setup": "512x512 gray8 frame, load_pipeline(threads=1), cv2.setNumThreads(1), "
        "ONNX Runtime CPU, graph optimisation 'all'",
        "cpu": cpu_name(),
        "measure_command": f"python -m tools.eval_denoise --model {onnx_path} --threads 1",
    }
    write_card(args.out / "card.json", card)
    print(
        f"held-out PSNR {metrics['psnr_db']:.2f} dB (input {metrics['input_psnr_db']:.2f}), "
        f"SSIM {metrics['ssim']:.3f} (input {metrics['input_ssim']:.3f}); "
        f"{card['cost']['gflops']} GFLOPs, {latency['pipeline_median_ms']:.2f} ms median; "
        f"total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
