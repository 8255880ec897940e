"""What the evaluation tools share: seed lists, Dice, latency, the held-out report, PNG plots.

The per-model scripts (tools/eval_seg.py, eval_denoise.py, eval_endo.py) keep only their
data and their metric; the training scripts and tools/quantize.py reuse the same pieces so
a card's numbers are measured exactly as the eval scripts measure them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, get_args

import cv2
import numpy as np

from engines import EngineSpec, InferencePipeline, load_pipeline
from engines.api import BackendName

FRAME_STRIDE = 37  # frames apart within one seed (~1.2 s at 30 fps): varied poses

# one frame to score: (image, truth label map, mask of the pixels that count for accuracy)
LabelledFrame = tuple[np.ndarray, np.ndarray, np.ndarray]


def parse_seeds(text: str) -> list[int]:
    """'2000-2003,2010' -> [2000, 2001, 2002, 2003, 2010]."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise argparse.ArgumentTypeError(f"seeds: expected e.g. '2000-2015,3000', got {text!r}")
        if int(hi or lo) < int(lo):  # an empty range: nothing to evaluate
            raise argparse.ArgumentTypeError(f"seeds: {part.strip()!r} runs backwards (LO-HI, LO <= HI)")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def confusion(pred: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """classes x classes counts, rows = truth, columns = prediction."""
    idx = truth.astype(np.int64).ravel() * classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=classes * classes).reshape(classes, classes)


def dice_scores(conf: np.ndarray, labels: list[str]) -> dict[str, object]:
    """Per-class Dice, mean over the foreground classes (all but 0), from a confusion matrix."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1)
    dice = {
        name: (float(2 * tp[i] / denom[i]) if denom[i] else None) for i, name in enumerate(labels)
    }
    fg = [d for name, d in dice.items() if name != labels[0] and d is not None]
    return {"dice": dice, "mean_foreground_dice": float(np.mean(fg)) if fg else None}


def evaluate_segmentation(
    pipeline: InferencePipeline,
    frames: Iterable[LabelledFrame],
    labels: list[str],
    pixel_format: str,
) -> dict[str, object]:
    """Dice per class (all pixels pooled), mean foreground Dice and pixel accuracy in the mask.

    `pixel_format` "auto": bgr8 for H x W x 3 frames, else gray8 (a mix of both).
    """
    n = len(labels)
    conf = np.zeros((n, n), np.int64)
    inside_conf = np.zeros((n, n), np.int64)
    count = 0
    for image, truth, inside in frames:
        fmt = pixel_format if pixel_format != "auto" else ("bgr8" if image.ndim == 3 else "gray8")
        pred = pipeline(image, fmt).mask
        if pred is None:
            raise ValueError(
                f"model {pipeline.model_id!r} gives no label map: not a segmentation model"
            )
        conf += confusion(pred, truth, n)
        inside_conf += confusion(pred[inside], truth[inside], n)
        count += 1
    result = dice_scores(conf, labels)
    result["pixel_accuracy_fov"] = float(np.trace(inside_conf) / inside_conf.sum())
    result["frames"] = count
    return result


def measure_latency(
    pipeline: InferencePipeline,
    image: np.ndarray,
    runs: int = 200,
    warmup: int = 20,
    pixel_format: str = "gray8",
) -> dict[str, float]:
    """Median and p90 milliseconds per call (whole pipeline and each stage) on one frame."""
    for _ in range(warmup):
        pipeline(image, pixel_format)
    totals, stages = [], []
    for _ in range(runs):
        t = time.perf_counter()
        result = pipeline(image, pixel_format)
        totals.append((time.perf_counter() - t) * 1e3)
        stages.append(result.timings_ms)
    out = {
        "pipeline_median_ms": float(np.median(totals)),
        "pipeline_p90_ms": float(np.percentile(totals, 90)),
    }
    for name in stages[0]:
        out[f"{name}_median_ms"] = float(np.median([s[name] for s in stages]))
    out["runs"] = runs
    return out


def held_out_parser(
    description: str, model: str, runs: int, backend_option: bool = True
) -> argparse.ArgumentParser:
    """The eval scripts' options: --model, [--backend], --seeds, --frames-per-seed, --threads, --runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=model, help="bundled model name or .onnx path")
    if backend_option:
        parser.add_argument("--backend", default="onnxruntime", choices=get_args(BackendName))
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    parser.add_argument("--frames-per-seed", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=runs, help="latency runs (0: skip)")
    return parser


def print_held_out_report(
    args: argparse.Namespace,
    backend: BackendName,
    evaluate: Callable[[InferencePipeline], Mapping[str, object]],
    latency_frame: Callable[[], tuple[np.ndarray, str]],
    warmup: int,
) -> None:
    """Load `args.model`, print its metrics (and latency on one frame unless --runs 0) as JSON.

    `latency_frame` gives the (image, pixel format) to time; `warmup` calls come first.
    """
    cv2.setNumThreads(args.threads)
    pipeline = load_pipeline(EngineSpec(model=args.model, backend=backend, threads=args.threads))
    report: dict[str, object] = {"model": pipeline.model_id, "seeds": args.seeds}
    report.update(evaluate(pipeline))
    if args.runs:
        image, pixel_format = latency_frame()
        latency = measure_latency(pipeline, image, args.runs, warmup, pixel_format)
        report["latency"] = {"threads": args.threads, **latency}
    pipeline.close()
    print(json.dumps(report, indent=2))


def score_and_time(
    model: str,
    evaluate: Callable[[InferencePipeline], Mapping[str, object]],
    image: np.ndarray,
    pixel_format: str,
    runs: int,
    warmup: int,
) -> tuple[dict[str, object], dict[str, float]]:
    """(metrics, latency) of `model` through ONNX Runtime, OpenCV and the engine on one thread.

    The setup every model card quotes; `image` is the frame timed after `warmup` calls.
    """
    cv2.setNumThreads(1)
    pipeline = load_pipeline(EngineSpec(model=model, backend="onnxruntime", threads=1))
    metrics = dict(evaluate(pipeline))
    latency = measure_latency(pipeline, image, runs, warmup, pixel_format)
    pipeline.close()
    return metrics, latency


def write_png(path: Path, size: tuple[float, float], draw: Callable[[Any], None]) -> str | None:
    """A `size` inch figure at 100 dpi with one axes, drawn by `draw(ax)`, written to `path`
    (no display needed); None, or why it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'medstream[profile]')"
    fig, ax = plt.subplots(figsize=size, dpi=100)
    draw(ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None
