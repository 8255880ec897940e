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

from stream.sources.phantom import LABELS
from tools.card_info import CONFIDENCE_THRESHOLD, NOTICE
from tools.eval_common import parse_seeds
from tools.eval_seg import phantom_card
from tools.seg_card import (
    PHANTOM_DATA,
    SEG_LOSS,
    SIZE,
    add_held_out_metrics,
    kept_fields,
    seg_card_head,
    seg_data,
    seg_description,
    training_data_text,
    val_note,
)
from tools.seg_net import SegNet
from tools.train_common import (
    add_held_out_options,
    architecture_card,
    check_training_args,
    deterministic,
    distillation_loss,
    export_model,
    forward,
    four_widths,
    parse_training_args,
    random_crops,
    run_card,
    schedule_card,
    seeds_card,
    segmentation_loss,
    start_run,
    train,
    training_parser,
    versions,
)

US_SEG_WIDTHS = (16, 32, 48, 64)  # us-seg's network: the students' size class


def parameters(widths: tuple[int, int, int, int]) -> int:
    return sum(p.numel() for p in SegNet(len(LABELS), widths).parameters())


def crop_batch(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` random crop x crop (image, label) pairs, each mirrored left-right with p = 1/2."""
    xs, ys = random_crops(rng, x, y, size, crop)
    return torch.from_numpy(xs), torch.from_numpy(ys.astype(np.int64))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "us-seg", epochs=20, lr=4e-3, train_seeds="0-95")
    p.set_defaults(out=Path("engines/models"))
    p.add_argument("--val-seeds", type=parse_seeds, default=parse_seeds("1000-1011"))
    p.add_argument("--crop", type=int, default=128, help="training crop side (<= 256)")
    p.add_argument("--teacher-widths", type=four_widths, default=(32, 64, 128, 256))
    p.add_argument("--student-widths", type=four_widths, default=(8, 16, 24, 32))
    p.add_argument("--temperature", type=float, default=2.0, help="KD softening temperature")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the KD term")
    add_held_out_options(p, frames_per_seed=4, latency_runs=200)
    args = parse_training_args(p, argv)
    if args.quick:
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
    command, started, _ = start_run("tools.train_distill", args, argv)
    x_train, y_train, x_val, y_val, mean, std = seg_data(args, started)

    def fit(
        role: str,
        widths: tuple[int, int, int, int],
        extra: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    ) -> SegNet:
        """Train the `role` network at `widths` (the loss plus `extra`, if any); write it."""
        print(f"{role} {widths}: {parameters(widths)} parameters", flush=True)
        rng = deterministic(args.seed, args.threads)  # same init and batches for each model
        model = SegNet(len(LABELS), widths)

        def step_loss() -> torch.Tensor:
            x, y = crop_batch(rng, x_train, y_train, args.batch, args.crop)
            logits = forward(model, x, args.precision)
            hard = segmentation_loss(logits, y)
            return hard if extra is None else (1 - args.alpha) * hard + extra(x, logits)

        note = val_note(model, x_val, y_val)
        seconds = train(model, step_loss, note, args.epochs, args.steps_per_epoch, args.lr)
        write_model(args, model, role, seconds, command, mean, std)
        return model

    teacher = fit("teacher", args.teacher_widths, None).eval()  # frozen from here on

    def kd_term(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = forward(teacher, x, args.precision)
        return args.alpha * distillation_loss(logits, target, args.temperature)

    for role, extra in (("student", None), ("student-kd", kd_term)):
        fit(role, args.student_widths, extra)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


LOSSES = {
    "teacher": SEG_LOSS,
    "student": SEG_LOSS,
    "student-kd": f"(1 - alpha) x ({SEG_LOSS}) + alpha x T^2 "
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
) -> None:
    """Export `model` to `<out>/<name>-<role>` (ONNX, TorchScript), evaluate it, write its card."""
    name = f"{args.name}-{role}"
    out = args.out / name
    onnx_path, _ = export_model(
        model, SegNet(len(LABELS), model.widths), out, (1, 1, SIZE, SIZE), "logits"
    )
    role_text = ROLES[role].format(teacher=f"{args.name}-teacher")
    training: dict = {
        "data": PHANTOM_DATA,
        "role": role_text,
        **phantom_card("classic"),
        **seeds_card(args),
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
    description = seg_description("classic", end=f": {role_text}.")
    card: dict = {
        **kept_fields(out / "card.json"),  # e.g. the applicability gate (tools/calibrate_gate)
        **seg_card_head(name, description, mean, std),
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
    add_held_out_metrics(card, out / "card.json", onnx_path, args, args.latency_runs, "classic")
    print(
        f"{name}: held-out mean fg Dice {card['metrics']['mean_foreground_dice']}, accuracy "
        f"{card['metrics']['pixel_accuracy_fov']}; {card['cost']['gflops']} GFLOPs, "
        f"{card['cost']['latency_ms']['pipeline_median_ms']:.2f} ms median",
        flush=True,
    )


if __name__ == "__main__":
    main()
