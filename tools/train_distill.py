"""Knowledge distillation on the phantom: a teacher segmenter, a student from scratch, a
distilled student; ONNX, TorchScript and a card for each.

    python -m tools.train_distill --out engines/models --threads 1   # the three bundled models
    python -m tools.train_distill --out /tmp/kd --quick                 # smoke run, seconds

Needs the `train` extra. All three are tools/seg_net.SegNet at different widths: the teacher
(`--teacher-widths`, at least 10x the student's parameters; checked) and the student
(`--student-widths`, no bigger than us-seg). Frames: the classic phantom scene, 512 x 512
downscaled by the pipeline's own preprocessing to 256 x 256 (as tools/train_seg.py); training
on random `--crop` x `--crop` crops of them (the network is fully convolutional), mirrored.
Models, in order, written to `<out>/<name>-teacher`, `<out>/<name>-student` and
`<out>/<name>-student-kd`:

    teacher      cross-entropy + (1 - mean foreground soft Dice), from scratch
    student      the same loss, from scratch
    student-kd   the same loss x (1 - alpha) + alpha x T^2 x KL(teacher || student) of the
                 per-pixel class distributions softened by temperature T (Hinton et al. 2015),
                 the teacher frozen, in inference mode

Both students start from the same initial weights and see the same batches (torch and the
sampler are re-seeded before each model), so the distillation term is the only difference.
Card metrics from held-out seeds through the exported ONNX model and the real pipeline.
Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stream.sources.phantom import LABELS, phantom_frame
from tools.card_info import CONFIDENCE_THRESHOLD, NOTICE
from tools.eval_common import parse_seeds, score_and_time
from tools.eval_seg import evaluate, phantom_card, phantom_set, spec_for_seed
from tools.seg_net import SegNet
from tools.train_common import (
    FRAME_INDICES,
    add_held_out_options,
    add_quick_option,
    add_training_options,
    apply_quick,
    architecture_card,
    check_training_args,
    command_line,
    cost_card,
    deterministic,
    export_onnx,
    forward,
    input_card,
    rounded,
    run_card,
    schedule_card,
    seed_text,
    segmentation_loss,
    segmentation_output_card,
    torchscript_from_onnx,
    train,
    versions,
    write_card,
)
from tools.train_seg import SIZE, _kept_fields, make_dataset, training_data_text, val_dice

US_SEG_WIDTHS = (16, 32, 48, 64)  # us-seg's network: the students' size class


def _widths(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"widths {text!r}: four integers, e.g. 8,16,24,32"
        ) from None
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"widths {text!r}: four positive integers")
    return values  # type: ignore[return-value]  # four, checked above


def parameters(widths: tuple[int, int, int, int]) -> int:
    return sum(p.numel() for p in SegNet(len(LABELS), widths).parameters())


def crop_batch(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` random crop x crop (image, label) pairs, each mirrored left-right with p = 1/2."""
    idx = rng.choice(len(x), size=min(size, len(x)), replace=False)
    xs, ys = [], []
    for i in idx:
        y0, x0 = (int(v) for v in rng.integers(0, x.shape[-1] - crop + 1, size=2))
        a = x[i, :, y0 : y0 + crop, x0 : x0 + crop]
        b = y[i, y0 : y0 + crop, x0 : x0 + crop]
        if rng.random() < 0.5:
            a, b = a[..., ::-1], b[..., ::-1]
        xs.append(a)
        ys.append(b)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 x KL(softmax(teacher / T) || softmax(student / T)), per pixel, averaged."""
    log_s = F.log_softmax(student / temperature, 1)
    log_t = F.log_softmax(teacher / temperature, 1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1).mean()
    return kl * temperature**2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_options(
        p, out="engines/models", name="us-seg", epochs=20, lr=4e-3, train_seeds="0-95"
    )
    p.add_argument("--val-seeds", type=parse_seeds, default=parse_seeds("1000-1011"))
    p.add_argument("--crop", type=int, default=128, help="training crop side (<= 256)")
    p.add_argument("--teacher-widths", type=_widths, default=(32, 64, 128, 256))
    p.add_argument("--student-widths", type=_widths, default=(8, 16, 24, 32))
    p.add_argument("--temperature", type=float, default=2.0, help="KD softening temperature")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the KD term")
    add_held_out_options(p, frames_per_seed=4, latency_runs=200)
    add_quick_option(p)
    args = p.parse_args(argv)
    if args.quick:
        apply_quick(args)
        args.val_seeds, args.latency_runs = [1000], 5
    check_training_args(p, args, [*args.val_seeds, *args.test_seeds])
    if not 16 <= args.crop <= SIZE or args.crop % 16:
        p.error(f"--crop must be a multiple of 16 in 16..{SIZE}")
    if parameters(args.student_widths) > parameters(US_SEG_WIDTHS):
        p.error(f"--student-widths: bigger than us-seg ({parameters(US_SEG_WIDTHS)} parameters)")
    ratio = parameters(args.teacher_widths) / parameters(args.student_widths)
    if ratio < 10:
        p.error(f"the teacher has {ratio:.1f}x the student's parameters; needs >= 10x")
    if not 0 <= args.alpha <= 1 or args.temperature <= 0:
        p.error("--alpha must be in [0, 1] and --temperature > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = command_line("tools.train_distill", argv)
    started = time.perf_counter()
    deterministic(args.seed, args.threads)

    x_train, y_train = make_dataset(args.train_seeds, args.frames_per_seed)
    x_val, y_val = make_dataset(args.val_seeds, max(1, args.frames_per_seed // 4))
    mean, std = round(float(x_train.mean()), 4), round(float(x_train.std()), 4)
    x_train = (x_train - mean) / std
    x_val = (x_val - mean) / std
    print(
        f"data: {len(x_train)} train / {len(x_val)} val frames, mean {mean} std {std} "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )

    def fit(
        widths: tuple[int, int, int, int],
        extra: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    ) -> tuple[SegNet, float]:
        rng = deterministic(args.seed, args.threads)  # same init and batches for each model
        model = SegNet(len(LABELS), widths)

        def step_loss() -> torch.Tensor:
            x, y = crop_batch(rng, x_train, y_train, args.batch, args.crop)
            logits = forward(model, x, args.precision)
            hard = segmentation_loss(logits, y)
            return hard if extra is None else (1 - args.alpha) * hard + extra(x, logits)

        seconds = train(
            model,
            step_loss,
            lambda losses: (
                f"loss {np.mean(losses):.4f}  val mean fg Dice {val_dice(model, x_val, y_val):.4f}"
            ),
            args.epochs,
            args.steps_per_epoch,
            args.lr,
        )
        return model, seconds

    print(
        f"teacher {args.teacher_widths}: {parameters(args.teacher_widths)} parameters", flush=True
    )
    teacher, teacher_seconds = fit(args.teacher_widths, None)
    teacher_path = write_model(args, teacher, "teacher", teacher_seconds, command, mean, std)
    teacher.eval()

    def kd_term(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = forward(teacher, x, args.precision)
        return args.alpha * distillation_loss(logits, target, args.temperature)

    for role, extra in (("student", None), ("student-kd", kd_term)):
        print(
            f"{role} {args.student_widths}: {parameters(args.student_widths)} parameters",
            flush=True,
        )
        model, seconds = fit(args.student_widths, extra)
        write_model(args, model, role, seconds, command, mean, std, teacher_path)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


LOSSES = {
    "teacher": "cross-entropy + (1 - mean foreground soft Dice)",
    "student": "cross-entropy + (1 - mean foreground soft Dice)",
    "student-kd": "(1 - alpha) x (cross-entropy + (1 - mean foreground soft Dice)) + alpha x T^2 "
    "x KL(softmax(teacher / T) || softmax(student / T)) per pixel",
}
ROLES = {
    "teacher": "the distillation teacher (at least 10x the students' parameters)",
    "student": "the small student, trained from scratch without the teacher",
    "student-kd": "the small student, distilled from {teacher}",
}


def write_model(
    args: argparse.Namespace,
    model: SegNet,
    role: str,
    train_seconds: float,
    command: str,
    mean: float,
    std: float,
    teacher: Path | None = None,
) -> Path:
    """Export `model` to `<out>/<name>-<role>` (ONNX, TorchScript), evaluate it, write its card."""
    name = f"{args.name}-{role}"
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_onnx(model, onnx_path, torch.zeros(1, 1, SIZE, SIZE), "image", "logits")
    diff = torchscript_from_onnx(
        SegNet(len(LABELS), model.widths),
        onnx_path,
        out / "model.pt",
        torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)),
    )
    training: dict = {
        "data": "stream.sources.phantom, 512x512 frames downscaled to 256x256",
        "role": ROLES[role].format(teacher=f"{args.name}-teacher"),
        **phantom_card("classic"),
        "train_seeds": seed_text(args.train_seeds),
        "val_seeds": seed_text(args.val_seeds),
        "frames_per_seed": args.frames_per_seed,
        "frame_indices": FRAME_INDICES,
        "crop": f"{args.crop}x{args.crop} random crops of the 256x256 frames, left-right mirror",
        **schedule_card(args),
        "loss": LOSSES[role],
        **run_card(args, train_seconds),
    }
    if role == "student-kd":
        training["distillation"] = {
            "teacher": f"{args.name}-teacher",
            "teacher_parameters": parameters(args.teacher_widths),
            "temperature": args.temperature,
            "alpha": args.alpha,
        }
    card: dict = {
        **_kept_fields(out / "card.json"),  # e.g. the applicability gate (tools/calibrate_gate)
        "name": name,
        "task": "segmentation",
        "description": "Ultrasound B-mode semantic segmentation (anechoic structures, lesions, "
        f"bright interfaces), trained only on medstream's synthetic phantom (classic scene): "
        f"{ROLES[role].format(teacher=f'{args.name}-teacher')}.",
        "labels": list(LABELS),
        "input": input_card("gray", SIZE, SIZE),
        "normalization": {"mean": [mean], "std": [std], "applied_to": "pixel / 255"},
        "output": segmentation_output_card(len(LABELS), SIZE, SIZE),
        "torchscript": "model.pt",
        "architecture": architecture_card("SegNet (tools/seg_net.py)", model),
        "training": training,
        "training_data": training_data_text("classic"),
        "command": command,
        "versions": versions(),
        "intended_use": "Research and demonstration: the distillation rows of `medstream "
        "evaluate` (teacher, student, distilled student) on phantom-like B-mode ultrasound. Not "
        "validated on patient images.",
        "confidence_threshold": CONFIDENCE_THRESHOLD,
        "notice": NOTICE,
    }
    write_card(out / "card.json", card)
    metrics, latency = score_and_time(
        str(onnx_path),
        lambda pipeline: evaluate(
            pipeline, phantom_set(args.test_seeds, args.test_frames_per_seed)
        ),
        phantom_frame(spec_for_seed(args.test_seeds[0]), 0).image,
        "gray8",
        args.latency_runs,
        warmup=min(20, args.latency_runs),
    )
    card["metrics"] = {
        "data": f"held-out phantom seeds {seed_text(args.test_seeds)}, "
        f"{args.test_frames_per_seed} frames each, 512x512, through the ONNX pipeline",
        "dice_definition": "2TP / (2TP + FP + FN) per class, pixels of all frames pooled",
        **rounded(metrics),
    }
    card["cost"] = cost_card(onnx_path, "256x256", "512x512 gray8", latency, "tools.eval_seg")
    write_card(out / "card.json", card)
    print(
        f"{name}: exported (max |torchscript - onnx| {diff:.2e}); held-out mean fg Dice "
        f"{card['metrics']['mean_foreground_dice']}, accuracy "
        f"{card['metrics']['pixel_accuracy_fov']}; {card['cost']['gflops']} GFLOPs, "
        f"{latency['pipeline_median_ms']:.2f} ms median",
        flush=True,
    )
    return out


if __name__ == "__main__":
    main()
