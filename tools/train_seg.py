"""Train the bundled ultrasound segmentation model on synthetic phantoms; export ONNX + card.

    python -m tools.train_seg --out engines/models/us-seg     # the bundled model, a few minutes
    python -m tools.train_seg --out /tmp/us-seg --quick       # smoke run, seconds
    python -m tools.train_seg --out engines/models/us-seg-dn --name us-seg-dn \
        --input-model us-denoise                              # the hybrid's segmenter

Needs the `train` extra (torch, onnx). Frames come from `stream.sources.phantom` (512 x 512,
even seeds sector, odd linear), downscaled by the inference pipeline's own preprocessing to
256 x 256; labels by nearest neighbour. Validation Dice (printed each epoch) uses held-out
seeds; the card's metrics come from other held-out seeds, run through the exported ONNX model
with the real pipeline at 512 x 512 (tools/eval_seg.py). With `--input-model`, every frame first
goes through that model's pipeline (e.g. the us-denoise speckle reducer), in training and in the
card's metrics (the chain `INPUT_MODEL+this`): a segmenter for a hybrid pipeline. Deterministic
for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F

from engines import EngineSpec, InferencePipeline, load_pipeline
from engines.preprocess import preprocess
from engines.registry import ModelInput
from stream.sources.phantom import LABELS, phantom_frame
from tools.eval_common import FRAME_STRIDE, dice_scores, measure_latency, parse_seeds
from tools.eval_seg import evaluate, phantom_set, spec_for_seed
from tools.onnx_flops import count_flops
from tools.seg_net import SegNet
from tools.train_common import torchscript_from_onnx

SIZE = 256
RAW_INPUT = ModelInput("image", "gray", SIZE, SIZE, "float32", (0.0,), (1.0,))  # pixel / 255


def _nearest(truth: np.ndarray, size: int) -> np.ndarray:
    """Label map -> size x size, nearest with pixel centres aligned (as the postprocess)."""
    ys = np.floor((np.arange(size) + 0.5) * truth.shape[0] / size).astype(np.intp)
    xs = np.floor((np.arange(size) + 0.5) * truth.shape[1] / size).astype(np.intp)
    return truth[ys[:, None], xs[None, :]]


def make_dataset(
    seeds: list[int], frames_per_seed: int, through: InferencePipeline | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N x 1 x 256 x 256 float32 pixel/255, N x 256 x 256 int64 labels) from phantom frames.

    `through`: a denoiser every frame goes through first (for a hybrid's segmenter).
    """
    images, labels = [], []
    for spec, index in phantom_set(seeds, frames_per_seed):
        frame = phantom_frame(spec, index)
        image = frame.image if through is None else through(frame.image, "gray8").image
        images.append(preprocess(image, "gray8", RAW_INPUT)[0])
        labels.append(_nearest(frame.truth, SIZE))
    return np.stack(images), np.stack(labels).astype(np.int64)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice of the foreground classes over the batch."""
    prob = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1))[1:].mean()


def predict(model: SegNet, x: np.ndarray, batch: int = 16) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [
            model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy()
            for i in range(0, len(x), batch)
        ]
    model.train()
    return np.concatenate(out)


def val_dice(model: SegNet, x: np.ndarray, y: np.ndarray) -> float:
    pred = predict(model, x)
    n = len(LABELS)
    conf = np.bincount((y * n + pred).ravel(), minlength=n * n).reshape(n, n)
    return float(dice_scores(conf, LABELS)["mean_foreground_dice"] or 0.0)


def export_onnx(model: SegNet, path: Path) -> None:
    model.eval()
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose: no onnxscript
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        _export(model, path)
    onnx.checker.check_model(onnx.load(str(path)))


def _export(model: SegNet, path: Path) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        str(path),
        dynamo=False,  # the TorchScript exporter: needs no onnxscript
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
    )


def _seed_text(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_card(path: Path, card: dict) -> None:
    path.write_text(json.dumps(card, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("engines/models/us-seg"), help="output folder")
    p.add_argument("--name", default="us-seg", help="model name in the card")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--seed", type=int, default=0, help="torch / sampling seed")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="training forward pass: bf16 autocast (~2x faster on CPUs with AVX512-BF16) or fp32",
    )
    p.add_argument("--train-seeds", type=parse_seeds, default=parse_seeds("0-95"))
    p.add_argument("--val-seeds", type=parse_seeds, default=parse_seeds("1000-1011"))
    p.add_argument("--test-seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    p.add_argument("--frames-per-seed", type=int, default=12)
    p.add_argument("--test-frames-per-seed", type=int, default=4)
    p.add_argument("--latency-runs", type=int, default=200)
    p.add_argument(
        "--input-model", default=None, help="a denoiser every frame goes through first (hybrid)"
    )
    p.add_argument("--quick", action="store_true", help="one tiny epoch on a few frames (tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.steps_per_epoch, args.batch = 1, 2, 2
        args.train_seeds, args.val_seeds, args.test_seeds = [0, 1], [1000], [2000, 2001]
        args.frames_per_seed, args.test_frames_per_seed, args.latency_runs = 2, 1, 5
    for name in ("epochs", "steps_per_epoch", "batch", "threads", "frames_per_seed"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    overlap = set(args.train_seeds) & (set(args.val_seeds) | set(args.test_seeds))
    if overlap:
        p.error(f"training seeds overlap held-out seeds: {sorted(overlap)[:5]}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(
        ["python", "-m", "tools.train_seg", *(sys.argv[1:] if argv is None else argv)]
    )
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    cv2.setNumThreads(args.threads)
    through = None
    if args.input_model:
        through = load_pipeline(EngineSpec(model=args.input_model, threads=args.threads))
    x_train, y_train = make_dataset(args.train_seeds, args.frames_per_seed, through)
    x_val, y_val = make_dataset(args.val_seeds, max(1, args.frames_per_seed // 4), through)
    if through is not None:
        through.close()
    mean, std = round(float(x_train.mean()), 4), round(float(x_train.std()), 4)
    x_train = (x_train - mean) / std
    x_val = (x_val - mean) / std
    print(
        f"data: {len(x_train)} train / {len(x_val)} val frames, mean {mean} std {std} "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )

    model = SegNet(classes=len(LABELS)).to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    total_steps = args.epochs * args.steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=total_steps, pct_start=0.15
    )
    train_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        losses = []
        for _ in range(args.steps_per_epoch):
            idx = rng.choice(len(x_train), size=min(args.batch, len(x_train)), replace=False)
            flip = rng.random(len(idx)) < 0.5  # left-right mirror: probes are symmetric
            x = torch.from_numpy(
                np.where(flip[:, None, None, None], x_train[idx, ..., ::-1], x_train[idx])
            )
            y = torch.from_numpy(
                np.where(flip[:, None, None], y_train[idx, ..., ::-1], y_train[idx])
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(x.contiguous(memory_format=torch.channels_last)).float()
            loss = F.cross_entropy(logits, y) + dice_loss(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        print(
            f"epoch {epoch}/{args.epochs}  loss {np.mean(losses):.4f}  "
            f"val mean fg Dice {val_dice(model, x_val, y_val):.4f}  "
            f"({time.perf_counter() - train_start:.0f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - train_start

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    export_onnx(model, onnx_path)
    torchscript_from_onnx(
        SegNet(classes=len(LABELS)),
        onnx_path,
        args.out / "model.pt",
        torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)),
    )
    check = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sample = x_val[:1].astype(np.float32)
    with torch.no_grad():
        diff = float(
            np.abs(
                check.run(None, {"image": sample})[0] - model(torch.from_numpy(sample)).numpy()
            ).max()
        )
    print(
        f"exported {onnx_path} ({onnx_path.stat().st_size / 1024:.0f} KiB), "
        f"max |onnx - torch| logit difference {diff:.2e}",
        flush=True,
    )

    description = (
        "Ultrasound B-mode semantic segmentation (anechoic structures, lesions, "
        "bright interfaces), trained only on medstream's synthetic phantom."
    )
    if args.input_model:
        description += f" Expects frames already denoised by {args.input_model} (a hybrid)."
    card: dict = {
        "name": args.name,
        "task": "segmentation",
        "description": description,
        "labels": list(LABELS),
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
            "name": "logits",
            "layout": "NCHW",
            "dtype": "float32",
            "classes": len(LABELS),
            "height": SIZE,
            "width": SIZE,
            "postprocess": "argmax over classes, nearest resize to the frame",
        },
        "torchscript": "model.pt",
        "architecture": {
            "name": "SegNet (tools/seg_net.py)",
            "widths": list(model.widths),
            "parameters": params,
            "opset": 17,
        },
        "training": {
            "data": "stream.sources.phantom, 512x512 frames downscaled to 256x256"
            + (f", after {args.input_model}" if args.input_model else ""),
            "input_model": args.input_model,
            "phantom": {
                k: v for k, v in asdict(spec_for_seed(0)).items() if k not in ("seed", "geometry")
            },
            "geometry": "even seeds sector, odd seeds linear",
            "train_seeds": _seed_text(args.train_seeds),
            "val_seeds": _seed_text(args.val_seeds),
            "frames_per_seed": args.frames_per_seed,
            "frame_indices": f"0, {FRAME_STRIDE}, {2 * FRAME_STRIDE}, ...",
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "batch": args.batch,
            "optimizer": f"AdamW lr {args.lr} one-cycle, weight decay 1e-4",
            "loss": "cross-entropy + (1 - mean foreground soft Dice)",
            "augmentation": "left-right mirror",
            "seed": args.seed,
            "threads": args.threads,
            "precision": args.precision,
            "train_seconds": round(train_seconds, 1),
        },
        "command": command,
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    write_card(args.out / "card.json", card)  # the pipeline needs it to load the model

    cv2.setNumThreads(1)
    evaluated = f"{args.input_model}+{onnx_path}" if args.input_model else str(onnx_path)
    pipeline = load_pipeline(EngineSpec(model=evaluated, backend="onnxruntime", threads=1))
    metrics = evaluate(pipeline, phantom_set(args.test_seeds, args.test_frames_per_seed))
    latency = measure_latency(
        pipeline,
        phantom_frame(spec_for_seed(args.test_seeds[0]), 0).image,
        runs=args.latency_runs,
        warmup=min(20, args.latency_runs),
    )
    pipeline.close()
    flops = count_flops(onnx_path)
    card["metrics"] = {
        "data": f"held-out phantom seeds {_seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 512x512, through the ONNX pipeline"
        + (f" {evaluated.replace(str(onnx_path), args.name)}" if args.input_model else ""),
        "dice_definition": "2TP / (2TP + FP + FN) per class, pixels of all frames pooled",
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    card["metrics"]["dice"] = {
        k: (round(v, 4) if v is not None else None) for k, v in metrics["dice"].items()
    }
    card["cost"] = {
        "gflops": round(flops.gflops, 4),
        "gflops_definition": "2 x multiply-accumulates of Conv/Gemm/MatMul, batch 1, 256x256 input",
        "latency_ms": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in latency.items()},
        "latency_setup": ("the whole chain with " + args.input_model + ", " if args.input_model else "")
        + "512x512 gray8 frame, load_pipeline(threads=1), cv2.setNumThreads(1), "
        "ONNX Runtime CPU, graph optimisation 'all'",
        "cpu": _cpu_name(),
        "measure_command": f"python -m tools.eval_seg --model {onnx_path} --threads 1",
    }
    write_card(args.out / "card.json", card)
    print(
        f"held-out Dice {card['metrics']['dice']}, mean fg {card['metrics']['mean_foreground_dice']}, "
        f"accuracy {card['metrics']['pixel_accuracy_fov']}",
        flush=True,
    )
    print(
        f"{flops.gflops:.3f} GFLOPs, pipeline {latency['pipeline_median_ms']:.2f} ms median on 1 thread; "
        f"total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
