"""Train the bundled endoscopic instrument segmentation model; export ONNX, TorchScript, card.

    python -m tools.train_endo --out engines/models/endo-instruments     # the bundled model
    python -m tools.train_endo --out /tmp/endo --quick                   # smoke run, seconds

Needs the `train` extra. Frames come from `stream.sources.endoscopy` (640 x 480 BGR), downscaled
by the pipeline's own preprocessing to 320 x 240; labels (background, instrument) by nearest
neighbour. The card's metrics come from held-out seeds through the exported ONNX model and the
real pipeline (tools/eval_endo.py). Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engines import EngineSpec, load_pipeline
from engines.preprocess import preprocess
from engines.registry import ModelInput
from stream.sources.endoscopy import LABELS, EndoscopySpec, endoscopy_frame
from tools.eval_common import FRAME_STRIDE, measure_latency, parse_seeds
from tools.eval_endo import endo_set, evaluate_endo
from tools.onnx_flops import count_flops
from tools.seg_net import SegNet
from tools.train_common import (
    cpu_name,
    export_onnx,
    rounded,
    seed_text,
    torchscript_from_onnx,
    versions,
    write_card,
)
from tools.train_seg import dice_loss

WIDTH, HEIGHT = 320, 240
RAW = ModelInput("image", "bgr", HEIGHT, WIDTH, "float32", (0.0,) * 3, (1.0,) * 3)  # pixel / 255


def _nearest(truth: np.ndarray) -> np.ndarray:
    ys = np.floor((np.arange(HEIGHT) + 0.5) * truth.shape[0] / HEIGHT).astype(np.intp)
    xs = np.floor((np.arange(WIDTH) + 0.5) * truth.shape[1] / WIDTH).astype(np.intp)
    return truth[ys[:, None], xs[None, :]]


def make_dataset(seeds: list[int], frames_per_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N x 3 x 240 x 320 float32 pixel/255 BGR, N x 240 x 320 int64 labels)."""
    images, labels = [], []
    for spec, index in endo_set(seeds, frames_per_seed):
        frame = endoscopy_frame(spec, index)
        images.append(preprocess(frame.image, "bgr8", RAW)[0])
        labels.append(_nearest(frame.truth))
    return np.stack(images), np.stack(labels).astype(np.int64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("engines/models/endo-instruments"))
    p.add_argument("--name", default="endo-instruments")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--train-seeds", type=parse_seeds, default=parse_seeds("0-79"))
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
        ["python", "-m", "tools.train_endo", *(sys.argv[1:] if argv is None else argv)]
    )
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    x_train, y_train = make_dataset(args.train_seeds, args.frames_per_seed)
    mean = [round(float(v), 4) for v in x_train.mean((0, 2, 3))]
    std = [round(float(v), 4) for v in x_train.std((0, 2, 3))]
    x_train = (x_train - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[
        :, None, None
    ]
    print(
        f"data: {len(x_train)} frames, mean {mean} std {std} ({time.perf_counter() - started:.1f} s)"
    )

    model = SegNet(classes=len(LABELS), in_channels=3)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * args.steps_per_epoch, pct_start=0.15
    )
    train_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        losses = []
        for _ in range(args.steps_per_epoch):
            idx = rng.choice(len(x_train), size=min(args.batch, len(x_train)), replace=False)
            flip = rng.random(len(idx)) < 0.5
            x = torch.from_numpy(
                np.where(flip[:, None, None, None], x_train[idx, ..., ::-1], x_train[idx])
            )
            y = torch.from_numpy(
                np.where(flip[:, None, None], y_train[idx, ..., ::-1], y_train[idx])
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(x).float()
            loss = F.cross_entropy(logits, y) + dice_loss(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        print(
            f"epoch {epoch}/{args.epochs}  loss {np.mean(losses):.4f}  "
            f"({time.perf_counter() - train_start:.0f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - train_start

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    export_onnx(model, onnx_path, torch.zeros(1, 3, HEIGHT, WIDTH), "image", "logits")
    diff = torchscript_from_onnx(
        SegNet(classes=len(LABELS), in_channels=3),
        onnx_path,
        args.out / "model.pt",
        torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)),
    )
    print(f"exported {onnx_path} and model.pt; max |torchscript - onnx| {diff:.2e}", flush=True)
    card: dict = {
        "name": args.name,
        "task": "segmentation",
        "description": "Surgical instrument segmentation in endoscopic video (background / "
        "instrument), trained only on medstream's synthetic endoscopy source.",
        "labels": list(LABELS),
        "input": {
            "name": "image",
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "bgr",
            "height": HEIGHT,
            "width": WIDTH,
            "batch": "dynamic",
            "resize": "bilinear, half-pixel (cv2.INTER_LINEAR) from the frame; see engines/preprocess.py",
        },
        "normalization": {"mean": mean, "std": std, "applied_to": "pixel / 255, B, G, R"},
        "output": {
            "name": "logits",
            "layout": "NCHW",
            "dtype": "float32",
            "classes": len(LABELS),
            "height": HEIGHT,
            "width": WIDTH,
            "postprocess": "argmax over classes, nearest resize to the frame",
        },
        "torchscript": "model.pt",
        "architecture": {
            "name": "SegNet (tools/seg_net.py)",
            "widths": list(model.widths),
            "in_channels": 3,
            "parameters": params,
            "opset": 17,
        },
        "training": {
            "data": "stream.sources.endoscopy, 640x480 BGR frames downscaled to 320x240",
            "train_seeds": seed_text(args.train_seeds),
            "frames_per_seed": args.frames_per_seed,
            "frame_indices": f"0, {FRAME_STRIDE}, {2 * FRAME_STRIDE}, ...",
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "batch": args.batch,
            "optimizer": f"AdamW lr {args.lr} one-cycle, weight decay 1e-4",
            "loss": "cross-entropy + (1 - instrument soft Dice)",
            "augmentation": "left-right mirror",
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
    metrics = evaluate_endo(pipeline, endo_set(args.test_seeds, args.test_frames_per_seed))
    latency = measure_latency(
        pipeline,
        endoscopy_frame(EndoscopySpec(seed=args.test_seeds[0]), 0).image,
        args.latency_runs,
        warmup=min(10, args.latency_runs),
        pixel_format="bgr8",
    )
    pipeline.close()
    card["metrics"] = {
        "data": f"held-out endoscopy seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 640x480, through the ONNX pipeline",
        "dice_definition": "2TP / (2TP + FP + FN) per class, pixels of all frames pooled",
        **rounded(metrics),
    }
    card["cost"] = {
        "gflops": round(count_flops(onnx_path).gflops, 4),
        "gflops_definition": "2 x multiply-accumulates of Conv/Gemm/MatMul, batch 1, 320x240 input",
        "latency_ms": rounded(latency, 3),
        "latency_setup": "640x480 bgr8 frame, load_pipeline(threads=1), cv2.setNumThreads(1), "
        "ONNX Runtime CPU, graph optimisation 'all'",
        "cpu": cpu_name(),
        "measure_command": f"python -m tools.eval_endo --model {onnx_path} --threads 1",
    }
    write_card(args.out / "card.json", card)
    print(
        f"held-out instrument Dice {metrics['dice']['instrument']:.4f}, accuracy "
        f"{metrics['pixel_accuracy_fov']:.4f}; {card['cost']['gflops']} GFLOPs, "
        f"{latency['pipeline_median_ms']:.2f} ms median; total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
