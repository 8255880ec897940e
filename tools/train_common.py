"""What the training scripts share: options, the training loop, export, card pieces.

Every bundled network is exported twice from the same weights: `model.onnx` (ONNX Runtime,
TensorRT) and `model.pt` (TorchScript, for the PyTorch backend). The TorchScript file is built
*from the ONNX file's weights* (`torchscript_from_onnx`), so both artefacts describe one network:
BatchNorm is folded into the convolutions at ONNX export, and the torch network gets those
folded weights back with its BatchNorms set to the identity plus the folded bias.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from tools.eval_common import FRAME_STRIDE, parse_seeds
from tools.machine import cpu_description
from tools.onnx_flops import count_flops

FRAME_INDICES = f"0, {FRAME_STRIDE}, {2 * FRAME_STRIDE}, ..."  # the frames used of each seed
OPSET = 17
RESIZE = "bilinear, half-pixel (cv2.INTER_LINEAR) from the frame; see engines/preprocess.py"


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The shell command that ran `python -m module` with `argv` (default: this process's)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def training_parser(
    doc: str, model: str, epochs: int, lr: float, train_seeds: str | None
) -> argparse.ArgumentParser:
    """A parser described by `doc`'s first line with --out (default engines/models/`model`),
    --name (default `model`), --epochs, --steps-per-epoch, --batch, --lr, --seed, --threads,
    --precision, --quick and (unless `train_seeds` is None) --train-seeds."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("engines/models", model), help="output folder")
    p.add_argument("--name", default=model, help="model name in the card")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (one-cycle)")
    p.add_argument("--seed", type=int, default=0, help="torch / sampling seed")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="training forward pass: bf16 autocast (~2x faster on CPUs with AVX512-BF16) or fp32",
    )
    if train_seeds is not None:
        p.add_argument("--train-seeds", type=parse_seeds, default=parse_seeds(train_seeds))
    p.add_argument("--quick", action="store_true", help="one tiny epoch on a few frames (tests)")
    return p


def four_widths(text: str) -> tuple[int, int, int, int]:
    """argparse type of a network's four stage widths, `a,b,c,d`, each >= 1."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"widths {text!r}: four integers, e.g. 8,16,24,32"
        ) from None
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"widths {text!r}: four positive integers")
    return values  # type: ignore[return-value]  # four, checked above


def add_held_out_options(
    p: argparse.ArgumentParser, frames_per_seed: int, latency_runs: int
) -> None:
    """--test-seeds, --frames-per-seed, --test-frames-per-seed and --latency-runs."""
    p.add_argument("--test-seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    p.add_argument("--frames-per-seed", type=int, default=frames_per_seed)
    p.add_argument("--test-frames-per-seed", type=int, default=4)
    p.add_argument("--latency-runs", type=int, default=latency_runs)


def parse_training_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; with --quick, `apply_quick`."""
    args = p.parse_args(argv)
    if args.quick:
        apply_quick(args)
    return args


def apply_quick(args: argparse.Namespace) -> None:
    """--quick: one tiny epoch on a few frames, one held-out seed, a short latency run."""
    args.epochs, args.steps_per_epoch, args.batch = 1, 2, 2
    args.train_seeds, args.test_seeds = [0, 1], [2000]
    args.frames_per_seed, args.test_frames_per_seed, args.latency_runs = 2, 1, 3


def check_training_args(
    p: argparse.ArgumentParser, args: argparse.Namespace, held_out: Iterable[int]
) -> None:
    """Counts of at least one; no training seed among the `held_out` ones (else p.error)."""
    for name in ("epochs", "steps_per_epoch", "batch", "threads", "frames_per_seed"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    overlap = set(args.train_seeds) & set(held_out)
    if overlap:
        p.error(f"training seeds overlap held-out seeds: {sorted(overlap)[:5]}")


def start_run(
    module: str, args: argparse.Namespace, argv: Sequence[str] | None
) -> tuple[str, float, np.random.Generator]:
    """(the command line for the card, the start time, the sampling RNG): `deterministic`."""
    return command_line(module, argv), time.perf_counter(), deterministic(args.seed, args.threads)


def deterministic(seed: int, threads: int) -> np.random.Generator:
    """Seed torch, fix its threads and algorithms; return the sampling RNG."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return np.random.default_rng(seed)


def forward(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, precision: str
) -> torch.Tensor:
    """The training forward pass (network or method), bf16 autocast for 'bf16'; float32 out."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x).float()


def train(
    model: nn.Module,
    step_loss: Callable[[], torch.Tensor],
    epoch_note: Callable[[list[float]], str],
    epochs: int,
    steps_per_epoch: int,
    lr: float,
) -> float:
    """AdamW with a one-cycle schedule over `epochs` x `steps_per_epoch` calls of `step_loss`.

    After each epoch prints `epoch E/N  <epoch_note(losses)>  (T s)`. Returns the seconds taken.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        losses = []
        for _ in range(steps_per_epoch):
            loss = step_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        note = epoch_note(losses)
        print(f"epoch {epoch}/{epochs}  {note}  ({time.perf_counter() - start:.0f} s)", flush=True)
    return time.perf_counter() - start


def loss_note(losses: list[float]) -> str:
    """The plain epoch note: the mean loss."""
    return f"loss {np.mean(losses):.4f}"


def mirrored_batch(rng: np.random.Generator, size: int, *arrays: np.ndarray) -> list[torch.Tensor]:
    """`size` random items, the same of each of `arrays` (e.g. images, label maps, a teacher's
    logits), each item left-right mirrored with probability 1/2, alike in every array."""
    idx = rng.choice(len(arrays[0]), size=min(size, len(arrays[0])), replace=False)
    flip = rng.random(len(idx)) < 0.5
    out = []
    for a in arrays:
        mirror = flip.reshape((-1,) + (1,) * (a.ndim - 1))
        out.append(torch.from_numpy(np.where(mirror, a[idx, ..., ::-1], a[idx])))
    return out


def random_crops(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """`size` random crop x crop windows (last two axes), the same place of x[i] and y[i], each
    pair mirrored left-right with probability 1/2; stacked."""
    idx = rng.choice(len(x), size=min(size, len(x)), replace=False)
    xs, ys = [], []
    for i in idx:
        y0, x0 = (int(v) for v in rng.integers(0, x.shape[-1] - crop + 1, size=2))
        a = x[i, ..., y0 : y0 + crop, x0 : x0 + crop]
        b = y[i, ..., y0 : y0 + crop, x0 : x0 + crop]
        if rng.random() < 0.5:
            a, b = a[..., ::-1], b[..., ::-1]
        xs.append(a)
        ys.append(b)
    return np.stack(xs), np.stack(ys)


def nearest_labels(truth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Label map -> height x width, nearest with pixel centres aligned (as the postprocess)."""
    ys = np.floor((np.arange(height) + 0.5) * truth.shape[0] / height).astype(np.intp)
    xs = np.floor((np.arange(width) + 0.5) * truth.shape[1] / width).astype(np.intp)
    return truth[ys[:, None], xs[None, :]]


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice of the foreground classes over the batch."""
    prob = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1))[1:].mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - mean foreground soft Dice)."""
    return F.cross_entropy(logits, target) + dice_loss(logits, target)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) of the per-pixel class distributions softened by `temperature`,
    times temperature^2 (Hinton et al. 2015), mean over pixels; the teacher's logits may be
    float16 (they are compared in float32)."""
    t = F.log_softmax(teacher.float() / temperature, 1)
    s = F.log_softmax(student / temperature, 1)
    kl = (t.exp() * (t - s)).sum(1).mean()
    return kl * temperature**2


def export_onnx(model: nn.Module, folder: Path, shape: tuple[int, ...], output_name: str) -> Path:
    """Write `folder`/model.onnx (input `image` of `shape`, dynamic batch) with the TorchScript
    exporter (no onnxscript needed), check it and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    model.eval()
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose: no onnxscript
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        torch.onnx.export(
            model,
            (torch.zeros(shape),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=[output_name],
            dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
            do_constant_folding=True,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def _conv_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every Conv2d in definition order, with the BatchNorm2d right after it (if any)."""
    mods = list(model.modules())
    pairs = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            pairs.append((m, nxt if isinstance(nxt, nn.BatchNorm2d) else None))
    return pairs


def load_onnx_weights(model: nn.Module, onnx_path: Path) -> nn.Module:
    """Give `model` the (BatchNorm-folded) weights of its own ONNX export, in conv order.

    Needs a network whose forward pass runs its convolutions in definition order (true of the
    tools' networks). Each BatchNorm becomes `x + bias`: weight 1, mean 0, var 1 - eps.
    """
    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    pairs = _conv_pairs(model)
    if len(convs) != len(pairs):
        raise ValueError(f"{onnx_path}: {len(convs)} Conv nodes, network has {len(pairs)} convs")
    with torch.no_grad():
        for node, (conv, bn) in zip(convs, pairs, strict=True):
            weight = inits[node.input[1]]
            bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0])
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"{onnx_path}: conv {node.name} {weight.shape} vs {conv.weight.shape}"
                )
            conv.weight.copy_(torch.from_numpy(np.array(weight)))
            if bn is None:
                if conv.bias is None:
                    raise ValueError(f"{onnx_path}: conv {node.name} has a bias the network lacks")
                conv.bias.copy_(torch.from_numpy(np.array(bias)))
            else:
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(bias)))
                assert bn.running_mean is not None and bn.running_var is not None
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
    return model.eval()


def traced_torchscript(
    model: nn.Module, onnx_path: Path, out: Path, example: torch.Tensor
) -> float:
    """Trace and freeze `model` (eval mode) to `out`; return max |TorchScript - ONNX Runtime|
    on `example` (the ONNX file holds the same weights: exported from, or loaded into, it)."""
    model.eval()
    with torch.no_grad():
        torch.jit.freeze(torch.jit.trace(model, example)).save(str(out))
        got = torch.jit.load(str(out))(example).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    return float(np.abs(ref - got).max())


def torchscript_from_onnx(
    model: nn.Module, onnx_path: Path, out: Path, example: torch.Tensor
) -> float:
    """Write TorchScript of `model` with the ONNX file's weights; return max |torch - onnx|."""
    return traced_torchscript(load_onnx_weights(model, onnx_path), onnx_path, out, example)


def export_model(
    model: nn.Module, fresh: nn.Module, folder: Path, shape: tuple[int, ...], output_name: str
) -> tuple[Path, float]:
    """Write `folder`/model.onnx (input `image` of `shape`, dynamic batch) from `model` and
    `folder`/model.pt, the TorchScript of the untrained `fresh` network given the ONNX file's
    weights; print and return (the ONNX path, max |TorchScript - ONNX Runtime|)."""
    onnx_path = export_onnx(model, folder, shape, output_name)
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    diff = torchscript_from_onnx(fresh, onnx_path, folder / "model.pt", example)
    print(f"exported {onnx_path} and model.pt; max |torchscript - onnx| {diff:.2e}", flush=True)
    return onnx_path, diff


def seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_card(path: Path, card: dict) -> None:
    path.write_text(json.dumps(card, indent=2) + "\n")


def rounded(values: dict, digits: int = 4) -> dict:
    """Floats rounded (recursively), for cards that stay readable."""
    out: dict = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out[k] = rounded(v, digits)
        elif isinstance(v, float):
            out[k] = round(v, digits)
        else:
            out[k] = v
    return out


def input_card(channels: str, height: int, width: int) -> dict:
    """The card's `input`: float32 NCHW `image`, dynamic batch."""
    return {
        "name": "image",
        "layout": "NCHW",
        "dtype": "float32",
        "channels": channels,
        "height": height,
        "width": width,
        "batch": "dynamic",
        "resize": RESIZE,
    }


def segmentation_output_card(classes: int, height: int, width: int) -> dict:
    """The card's `output` of a segmentation network: NCHW `logits`."""
    return {
        "name": "logits",
        "layout": "NCHW",
        "dtype": "float32",
        "classes": classes,
        "height": height,
        "width": width,
        "postprocess": "argmax over classes, nearest resize to the frame",
    }


def architecture_card(name: str, model: nn.Module, in_channels: int | None = None) -> dict:
    """The card's `architecture`: the network's name, widths, parameter count, opset."""
    widths: Iterable[int] = model.widths  # type: ignore[assignment]  # set by each network's __init__
    card: dict = {"name": name, "widths": list(widths)}
    if in_channels is not None:
        card["in_channels"] = in_channels
    card["parameters"] = sum(p.numel() for p in model.parameters())
    card["opset"] = OPSET
    return card


def schedule_card(args: argparse.Namespace) -> dict:
    """epochs, steps_per_epoch, batch and the optimiser, for the card's `training`."""
    return {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch": args.batch,
        "optimizer": f"AdamW lr {args.lr} one-cycle, weight decay 1e-4",
    }


def seeds_card(args: argparse.Namespace) -> dict:
    """train_seeds, val_seeds (where the script has them), frames_per_seed and frame_indices,
    for the card's `training`."""
    card = {"train_seeds": seed_text(args.train_seeds)}
    if "val_seeds" in args:
        card["val_seeds"] = seed_text(args.val_seeds)
    return {**card, "frames_per_seed": args.frames_per_seed, "frame_indices": FRAME_INDICES}


def run_card(args: argparse.Namespace, train_seconds: float) -> dict:
    """seed, threads, precision and the time taken, for the card's `training`."""
    return {
        "seed": args.seed,
        "threads": args.threads,
        "precision": args.precision,
        "train_seconds": round(train_seconds, 1),
    }


def cost_card(
    onnx_path: Path, input_size: str, frame: str, latency: dict[str, float], eval_module: str
) -> dict:
    """The card's `cost`: GFLOPs for one `input_size` input (e.g. '256x256'), the latency
    measured on one `frame` (e.g. '512x512 gray8') as `score_and_time` does, this CPU."""
    return {
        "gflops": round(count_flops(onnx_path).gflops, 4),
        "gflops_definition": "2 x multiply-accumulates of Conv/Gemm/MatMul, batch 1, "
        f"{input_size} input",
        "latency_ms": rounded(latency, 3),
        "latency_setup": f"{frame} frame, load_pipeline(threads=1), cv2.setNumThreads(1), "
        "ONNX Runtime CPU, graph optimisation 'all'",
        "cpu": cpu_description(),
        "measure_command": f"python -m {eval_module} --model {onnx_path} --threads 1",
    }


def denoiser_card_head(
    name: str, description: str, model: nn.Module, size: int, mean: float, std: float
) -> dict:
    """The first fields of a DenoiseNet card (tools/denoise_net.py): grey `size` x `size` in,
    the denoised frame out; the training scripts add training, data and metrics."""
    return {
        "name": name,
        "task": "denoising",
        "description": description,
        "labels": [],
        "input": input_card("gray", size, size),
        "normalization": {"mean": [mean], "std": [std], "applied_to": "pixel / 255"},
        "output": {
            "name": "denoised",
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "gray",
            "scale": 255.0,
            "height": size,
            "width": size,
            "postprocess": "pixel = clip(round(255 x output), 0, 255), bilinear resize to the frame",
        },
        "torchscript": "model.pt",
        "architecture": architecture_card("DenoiseNet (tools/denoise_net.py)", model),
    }
