"""Structured channel pruning of us-seg: an accuracy-versus-time curve and a pruned model.

    python -m tools.prune_seg                   # the curve (docs/pruning.{png,md,json}) and
                                                # engines/models/us-seg-pruned: its card has the
                                                # command
    python -m tools.prune_seg --quick --out /tmp/p --docs /tmp/p   # smoke run, seconds

For each keep ratio r (default 1.0, 0.75, 0.5, 0.35) every convolution of us-seg's SegNet
(tools/seg_net.py) keeps round(r x width) output channels: the filters with the largest L1
norm (of the BatchNorm-folded weights of the ONNX file, over the input channels still kept),
layer by layer in forward order; depthwise convolutions and the next layer's inputs (skip
concatenations included) keep the matching channels. The result is a narrower SegNet, so
export, TorchScript and the pipeline are as for us-seg. Pruning is iterative by default: each
ratio is cut from the fine-tuned previous one (0.75 from us-seg, 0.5 from the fine-tuned 0.75,
...), widths always relative to us-seg. Each pruned network (r < 1) is fine-tuned on us-seg's
training data (scene mix, left-right mirror) with its BatchNorm re-estimated (batch statistics
of the fine-tuning frames, affine set so the network starts as the pruned one) and trained, and
with distillation from us-seg (KL divergence to its softened logits). After all ratios are
trained, their accuracy is measured as `medstream evaluate` measures a row (held-out phantom
frames, one thread) and their time in one pass with all ratios interleaved (each round times
every ratio once on the same frame), so the load of a shared machine affects them alike. The
shipped model is the pruned ratio with the fewest GFLOPs (deterministic, unlike a time) whose
held-out pixel accuracy is within --max-drop (default 1 point) of us-seg's; if none is, the
most accurate pruned ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from engines import EngineSpec, load_pipeline
from engines.registry import resolve_model
from stream.sources.phantom import LABELS
from tools.eval_common import parse_seeds, write_png
from tools.evaluate import Row, Sample, run_row, ultrasound_samples
from tools.machine import cpu_description
from tools.onnx_flops import count_flops
from tools.seg_card import (
    PHANTOM_DATA,
    SEG_LOSS,
    SIZE,
    add_held_out_metrics,
    kept_fields,
    make_dataset,
    seg_card_head,
    training_data_text,
)
from tools.seg_net import SegNet
from tools.train_common import (
    apply_quick,
    architecture_card,
    check_training_args,
    distillation_loss,
    export_model,
    forward,
    load_onnx_weights,
    mirrored_batch,
    rounded,
    run_card,
    schedule_card,
    seed_text,
    seeds_card,
    segmentation_loss,
    start_run,
    train,
    training_parser,
    versions,
    write_card,
)

SOURCE = "us-seg"
MIN_WIDTH = 4


def pruned_widths(widths: tuple[int, ...], keep: float) -> tuple[int, int, int, int]:
    """Each stage width x keep, rounded, at least MIN_WIDTH (and at most the width)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep}")
    a, b, c, d = (min(w, max(MIN_WIDTH, round(w * keep))) for w in widths)
    return a, b, c, d


def _l1_top(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (ascending) of the k output filters of `weight` with the largest L1 norm."""
    norms = weight.abs().flatten(1).sum(1)
    return torch.sort(torch.topk(norms, k).indices).values


def _copy_cbr(src: Any, dst: Any, out_idx: torch.Tensor, in_idx: torch.Tensor | None) -> None:
    """Conv (+ BatchNorm) of `src` restricted to out_idx (and in_idx, unless depthwise)."""
    conv_s, conv_d = src[0], dst[0]
    w = conv_s.weight[out_idx]
    conv_d.weight.copy_(w if in_idx is None else w[:, in_idx])
    if conv_s.bias is not None:
        conv_d.bias.copy_(conv_s.bias[out_idx])
    if len(src) > 1 and isinstance(src[1], nn.BatchNorm2d):
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst[1], name).copy_(getattr(src[1], name)[out_idx])


def _separable(src: Any, dst: Any, in_idx: torch.Tensor) -> torch.Tensor:
    """Prune a SeparableConv: the depthwise conv keeps the kept inputs, the pointwise conv
    keeps its dst width of filters by L1 norm. Returns the kept output channels."""
    _copy_cbr(src[0], dst[0], in_idx, None)
    k = dst[1][0].out_channels
    out_idx = _l1_top(src[1][0].weight[:, in_idx], k)
    _copy_cbr(src[1], dst[1], out_idx, in_idx)
    return out_idx


def prune_segnet(
    source: SegNet, keep: float, widths: tuple[int, int, int, int] | None = None
) -> SegNet:
    """A narrower SegNet with `source`'s L1-largest filters (see the module docstring).

    `widths`: the stage widths to keep (each at most `source`'s); default `source`'s x keep.
    """
    model: Any = source  # submodules by attribute: torch's stubs type them as Tensor | Module
    classes, cin = model.head.out_channels, model.stem[0].in_channels
    if widths is None:
        widths = pruned_widths(model.widths, keep)
    if any(w > s or w < 1 for w, s in zip(widths, model.widths, strict=True)):
        raise ValueError(f"widths {widths} must be in 1..{model.widths}")
    pruned = SegNet(classes, widths, cin).eval()
    out: Any = pruned
    _, b, c, d = model.widths
    with torch.no_grad():
        stem = _l1_top(model.stem[0].weight, out.widths[0])
        _copy_cbr(model.stem, out.stem, stem, torch.arange(cin))
        s1 = _separable(model.enc1, out.enc1, stem)
        s2 = _separable(model.enc2[1], out.enc2[1], _separable(model.enc2[0], out.enc2[0], s1))
        s3 = _separable(model.enc3[1], out.enc3[1], _separable(model.enc3[0], out.enc3[0], s2))
        y = s3
        for src, dst in zip(model.enc4, out.enc4, strict=True):
            y = _separable(src, dst, y)
        y = _separable(model.dec3, out.dec3, torch.cat([y, d + s3]))  # cat([up(y), s3])
        y = _separable(model.dec2, out.dec2, torch.cat([y, c + s2]))
        y = _separable(model.dec1, out.dec1, torch.cat([y, b + s1]))
        out.head.weight.copy_(model.head.weight[:, y])
        out.head.bias.copy_(model.head.bias)
    return pruned


def reestimate_batchnorm(model: nn.Module, x: np.ndarray, batch: int = 16) -> None:
    """Give every BatchNorm the statistics of its input over the frames `x`, keeping the
    network's eval-mode function: running mean/var = those statistics, weight = sqrt(var + eps),
    bias = old bias + mean (the BatchNorms of folded weights are `x + bias`). In training mode
    (batch statistics) the network then starts close to the function it had."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("reestimate_batchnorm needs BatchNorms that track statistics")
        if not (torch.all(bn.running_mean == 0) and torch.all(bn.weight == 1)):
            raise ValueError("reestimate_batchnorm expects folded BatchNorms (x + bias)")
    sums: dict[nn.Module, list[torch.Tensor]] = {bn: [] for bn in bns}

    def hook(bn: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        v = inputs[0].double()
        sums[bn].append(torch.stack([v.mean((0, 2, 3)), (v * v).mean((0, 2, 3))]))

    handles = [bn.register_forward_hook(hook) for bn in bns]
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                model(torch.from_numpy(x[i : i + batch]))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for bn in bns:
            m1, m2 = torch.stack(sums[bn]).mean(0)
            mean, var = m1, (m2 - m1 * m1).clamp_min(0)
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.add_(mean)


def teacher_logits(model: nn.Module, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """The eval-mode logits of `model` for every frame of `x`, as float16 (memory)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i : i + batch])).half().numpy())
    return np.concatenate(out)


def interleaved_times(
    models: dict[float, Path], samples: list[Sample], threads: int, runs: int
) -> dict[float, list[float]]:
    """ms per call of each model's ONNX pipeline, `runs` rounds; each round calls every model
    once on the same frame (order rotated per round), so load affects all alike."""
    pipes = {
        k: load_pipeline(EngineSpec(model=str(p), backend="onnxruntime", threads=threads))
        for k, p in models.items()
    }
    try:
        keys = list(pipes)
        for k in keys:  # warm-up
            pipes[k](samples[0].image, samples[0].pixel_format)
        times: dict[float, list[float]] = {k: [] for k in keys}
        for r in range(runs):
            s = samples[r % len(samples)]
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                t0 = time.perf_counter()
                pipes[k](s.image, s.pixel_format)
                times[k].append((time.perf_counter() - t0) * 1e3)
        return times
    finally:
        for p in pipes.values():
            p.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "us-seg-pruned", epochs=12, lr=2e-3, train_seeds="0-255")
    p.set_defaults(steps_per_epoch=100, threads=1)
    p.add_argument("--work", type=Path, default=Path("out/prune"), help="every ratio's model")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="pruning.{png,md,json} here")
    p.add_argument("--keep", default="1.0,0.75,0.5,0.35", help="keep ratios, comma separated")
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.01,
        help="ship the cheapest ratio whose held-out pixel accuracy is at most this below us-seg's",
    )
    p.add_argument(
        "--iterative",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut each ratio from the fine-tuned previous one (else every ratio from us-seg)",
    )
    p.add_argument(
        "--distill", type=float, default=1.0, help="weight of the KL loss to us-seg (0: none)"
    )
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature")
    p.add_argument("--frames-per-seed", type=int, default=4)
    p.add_argument("--test-seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    p.add_argument("--test-frames-per-seed", type=int, default=4)
    p.add_argument("--eval-seeds", type=parse_seeds, default=parse_seeds("3000-3015"))
    p.add_argument("--eval-frames-per-seed", type=int, default=4)
    p.add_argument("--timing-runs", type=int, default=200, help="as medstream evaluate")
    args = p.parse_args(argv)
    try:
        args.keep = sorted({float(v) for v in args.keep.split(",")}, reverse=True)
        [pruned_widths((16, 32, 48, 64), k) for k in args.keep]
    except ValueError as e:
        p.error(f"--keep: {e}")
    if args.keep[0] != 1.0:
        p.error("--keep must include 1.0 (the unpruned reference)")
    if args.quick:
        apply_quick(args)
        args.eval_seeds, args.eval_frames_per_seed, args.timing_runs = [3000, 3001], 1, 3
    if args.distill < 0 or args.temperature <= 0 or not 0 <= args.max_drop < 1:
        p.error("--distill must be >= 0, --temperature > 0, --max-drop in [0, 1)")
    check_training_args(p, args, [*args.test_seeds, *args.eval_seeds])
    return args


def plot_curve(points: list[dict], chosen: float, path: Path) -> str | None:
    """Accuracy against median ms, one point per keep ratio; None, or why it was skipped."""

    def draw(ax: Any) -> None:
        ms = [p["median_ms"] for p in points]
        acc = [100 * p["pixel_accuracy"] for p in points]
        ax.plot(ms, acc, "o-", color="tab:blue")
        for p, x, y in zip(points, ms, acc, strict=True):
            label = f"keep {p['keep']:g}" + (" (shipped)" if p["keep"] == chosen else "")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("median ms per 512x512 frame (1 thread)")
        ax.set_ylabel("pixel accuracy in the field of view (%)")
        ax.set_title("us-seg: L1 channel pruning + fine-tuning (distilled)")
        ax.grid(alpha=0.3)

    return write_png(path, (6, 4), draw)


def markdown(report: dict) -> str:
    s = report["setup"]
    lines = [
        f"Structured channel pruning of {SOURCE} (tools/prune_seg.py), measured {s['date']} on "
        f"{s['cpu']}, one thread; {s['eval_frames']} held-out phantom frames (seeds "
        f"{s['eval_seeds']}, as `medstream evaluate`); times: one pass after all training, "
        f"{s['timing_runs']} calls per ratio with the ratios interleaved (the whole pipeline on a "
        "512 x 512 frame: resize, network, argmax, gate). On a shared machine differences of a "
        "few tenths of a ms are within the load noise; GFLOPs are the deterministic measure "
        "of cost.",
        "",
        "| keep | widths | parameters | GFLOPs | pixel accuracy | Dice | median ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report["points"]:
        lines.append(
            f"| {p['keep']:g} | {'/'.join(map(str, p['widths']))} | {p['parameters']} | "
            f"{p['gflops']:.4f} | {100 * p['pixel_accuracy']:.1f}% | {p['mean_dice']:.3f} | "
            f"{p['median_ms']:.2f} | {p['p99_ms']:.2f} |"
        )
    lines += [
        "",
        f"Shipped as {report['shipped']['name']}: keep {report['shipped']['keep']:g} "
        f"({report['shipped']['rule']}).",
        "",
        "![accuracy vs time](pruning.png)",
        "",
        f"Command: `{s['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, started, rng = start_run("tools.prune_seg", args, argv)
    cv2.setNumThreads(args.threads)
    ref = resolve_model(SOURCE)
    src_card = ref.card.raw
    mean, std = ref.card.input.mean[0], ref.card.input.std[0]
    scene = str(src_card["training"].get("scene", "classic"))
    source = SegNet(len(LABELS), tuple(src_card["architecture"]["widths"]))
    load_onnx_weights(source, ref.onnx_path)
    x_train, y_train = make_dataset(args.train_seeds, args.frames_per_seed, scene=scene)
    x_train = ((x_train - mean) / std).astype(np.float32)
    data = (x_train, y_train, *([teacher_logits(source, x_train)] if args.distill > 0 else []))
    samples = ultrasound_samples(args.eval_seeds, args.eval_frames_per_seed)
    print(f"data: {len(x_train)} fine-tuning frames ({time.perf_counter() - started:.0f} s)")

    points, runs = [], {}
    parent = source
    for keep in args.keep:
        model = prune_segnet(parent, keep, pruned_widths(source.widths, keep))
        seconds = 0.0
        if keep < 1.0:
            net = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; its stub omits it
            reestimate_batchnorm(net, x_train[:: max(1, len(x_train) // 256)])

            def step_loss(net: nn.Module = net) -> torch.Tensor:
                net.train()
                x, y, *t = mirrored_batch(rng, args.batch, *data)  # t: the teacher's logits
                x = x.contiguous(memory_format=torch.channels_last)
                logits = forward(net, x, args.precision)
                loss = segmentation_loss(logits, y.long())
                if t:
                    loss = loss + args.distill * distillation_loss(logits, t[0], args.temperature)
                return loss

            def note(losses: list[float], keep: float = keep) -> str:
                return f"keep {keep:g}  loss {np.mean(losses):.4f}"

            seconds = train(model, step_loss, note, args.epochs, args.steps_per_epoch, args.lr)
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        folder = args.work / f"keep-{keep:g}"
        onnx_path, diff = export_model(
            model, SegNet(len(LABELS), model.widths), folder, (1, 1, SIZE, SIZE), "logits"
        )
        card = {  # as the source's, so the pipeline treats every ratio alike (confidence, gate)
            **seg_card_head(args.name, f"{SOURCE} pruned to keep {keep:g}", mean, std),
            "training_data": training_data_text(scene),
            **{k: src_card[k] for k in ("confidence_threshold", "applicability") if k in src_card},
        }
        write_card(folder / "card.json", card)
        if args.iterative:
            parent = SegNet(len(LABELS), model.widths)  # the next ratio is cut from this one
            load_onnx_weights(parent, onnx_path)
        runs[keep] = (model, folder, seconds, diff)
        print(f"keep {keep:g}: fine-tuned in {seconds:.0f} s", flush=True)

    for keep, (model, folder, seconds, diff) in runs.items():  # after all training
        onnx_path = folder / "model.onnx"
        row = run_row(
            Row("CNN", None, str(onnx_path)),
            samples,
            list(LABELS),
            args.threads,
            "onnxruntime",
            1,  # accuracy only: the times come from the interleaved pass below
        )
        point = {
            "keep": keep,
            "widths": list(model.widths),
            "parameters": sum(p.numel() for p in model.parameters()),
            "gflops": count_flops(onnx_path).gflops,
            "pixel_accuracy": row["pixel_accuracy"],
            "mean_dice": row["mean_dice"],
            "fine_tune_seconds": round(seconds, 1),
            "torchscript_vs_onnx": float(f"{diff:.2e}"),
        }
        points.append(point)
    times = interleaved_times(
        {k: folder / "model.onnx" for k, (_, folder, _, _) in runs.items()},
        samples,
        args.threads,
        args.timing_runs,
    )
    for point in points:
        point["median_ms"] = float(np.median(times[point["keep"]]))
        point["p99_ms"] = float(np.percentile(times[point["keep"]], 99))
        print(f"keep {point['keep']:g}: {rounded(point)}", flush=True)
    points = [rounded(p) for p in points]

    reference = points[0]["pixel_accuracy"]
    pruned = [p for p in points if p["keep"] < 1.0] or points
    ok = [p for p in pruned if p["pixel_accuracy"] >= reference - args.max_drop]
    if ok:
        best = min(ok, key=lambda p: p["gflops"])
        rule = (
            f"the pruned ratio with the fewest GFLOPs whose held-out pixel accuracy is within "
            f"{100 * args.max_drop:g} point(s) of {SOURCE}'s"
        )
    else:
        best = max(pruned, key=lambda p: p["pixel_accuracy"])
        rule = (
            f"no pruned ratio came within {100 * args.max_drop:g} point(s) of {SOURCE}'s "
            "held-out pixel accuracy: the most accurate pruned ratio"
        )
    model, folder, seconds, _ = runs[best["keep"]]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "model.pt"):
        shutil.copyfile(folder / name, args.out / name)
    card_path = args.out / "card.json"
    description = (
        f"{SOURCE} with L1-norm structured channel pruning (keep {best['keep']:g} of every "
        "layer's channels) and brief fine-tuning: ultrasound B-mode semantic segmentation "
        "(anechoic structures, lesions, bright interfaces), synthetic phantom only."
    )
    card = {
        **kept_fields(card_path),
        **seg_card_head(args.name, description, mean, std),
        "training_data": training_data_text(scene),
        "architecture": architecture_card("SegNet (tools/seg_net.py)", model),
        "pruning": {
            "source": SOURCE,
            "keep": best["keep"],
            "criterion": "L1 norm of each conv's BatchNorm-folded filters over the kept inputs",
            "rule": rule,
            "curve": "docs/pruning.md",
        },
        "training": {
            "data": f"{PHANTOM_DATA} (fine-tuning of the pruned {SOURCE})",
            "scene": scene,
            **seeds_card(args),
            **schedule_card(args),
            "loss": SEG_LOSS + (" + weight x distillation KL" if args.distill > 0 else ""),
            "augmentation": "left-right mirror",
            "batchnorm": "re-estimated on the fine-tuning frames, then trained (batch statistics)",
            "iterative": args.iterative,
            "distillation": (
                f"KL to {SOURCE}'s logits at temperature {args.temperature:g}, weight "
                f"{args.distill:g}"
                if args.distill > 0
                else "none"
            ),
            **run_card(args, seconds),
        },
        "command": command,
        "versions": versions(),
    }
    add_held_out_metrics(card, card_path, args.out / "model.onnx", args, args.timing_runs, scene)
    report = {
        "setup": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "cpu": cpu_description(),
            "eval_seeds": seed_text(args.eval_seeds),
            "eval_frames": len(samples),
            "timing_runs": args.timing_runs,
            "command": command,
        },
        "points": points,
        "shipped": {"name": args.name, "keep": best["keep"], "rule": rule},
    }
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "pruning.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.docs / "pruning.md").write_text(markdown(report))
    skipped = plot_curve(points, best["keep"], args.docs / "pruning.png")
    print(markdown(report) + (f"plot skipped: {skipped}\n" if skipped else ""))
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
