"""Evaluate a segmentation model on held-out phantom frames: Dice, accuracy and latency.

    python -m tools.eval_seg --model us-seg --seeds 2000-2015 --frames-per-seed 4

Runs the real inference pipeline (`engines.load_pipeline`, preprocess + ONNX Runtime +
postprocess) on 512 x 512 phantom frames and compares its label map with the phantom's truth.
Dice per class = 2 TP / (2 TP + FP + FN) over all pixels of all frames together; pixel accuracy
counts the pixels inside the probe's field of view. Latency: median and p90 per call on one
frame, after a warm-up, with OpenCV and ONNX Runtime limited to `--threads`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from engines import EngineSpec, InferencePipeline, load_pipeline
from stream.sources.phantom import LABELS, PhantomSpec, fov_mask, phantom_frame

FRAME_STRIDE = 37  # frames apart within one seed (~1.2 s at 30 fps): varied probe poses


def spec_for_seed(seed: int) -> PhantomSpec:
    """The phantom used for `seed` in training and evaluation: even seeds sector, odd linear."""
    return PhantomSpec(seed=seed, geometry="sector" if seed % 2 == 0 else "linear")


def phantom_set(
    seeds: Iterable[int], frames_per_seed: int, offset: int = 0
) -> Iterator[tuple[PhantomSpec, int]]:
    """(spec, frame index) pairs: `frames_per_seed` frames FRAME_STRIDE apart for each seed."""
    for seed in seeds:
        spec = spec_for_seed(seed)
        for k in range(frames_per_seed):
            yield spec, offset + k * FRAME_STRIDE


def parse_seeds(text: str) -> list[int]:
    """'2000-2003,2010' -> [2000, 2001, 2002, 2003, 2010]."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise argparse.ArgumentTypeError(f"seeds: expected e.g. '2000-2015,3000', got {text!r}")
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


def evaluate(
    pipeline: InferencePipeline, frames: Iterable[tuple[PhantomSpec, int]]
) -> dict[str, object]:
    """Dice per class, mean foreground Dice and in-FOV pixel accuracy over `frames`."""
    n = len(LABELS)
    conf = np.zeros((n, n), np.int64)
    fov_conf = np.zeros((n, n), np.int64)
    count = 0
    for spec, index in frames:
        frame = phantom_frame(spec, index)
        pred = pipeline(frame.image, "gray8").mask
        if pred is None:
            raise ValueError(
                f"model {pipeline.model_id!r} gives no label map: not a segmentation model"
            )
        conf += confusion(pred, frame.truth, n)
        inside = fov_mask(spec)
        fov_conf += confusion(pred[inside], frame.truth[inside], n)
        count += 1
    result = dice_scores(conf, LABELS)
    result["pixel_accuracy_fov"] = float(np.trace(fov_conf) / fov_conf.sum())
    result["frames"] = count
    return result


def measure_latency(
    pipeline: InferencePipeline, image: np.ndarray, runs: int = 200, warmup: int = 20
) -> dict[str, float]:
    """Median and p90 milliseconds per call (whole pipeline and each stage) on one frame."""
    for _ in range(warmup):
        pipeline(image, "gray8")
    totals, stages = [], []
    for _ in range(runs):
        t = time.perf_counter()
        result = pipeline(image, "gray8")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="us-seg", help="bundled model name or .onnx path")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    parser.add_argument("--frames-per-seed", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200, help="latency runs (0: skip)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    pipeline = load_pipeline(
        EngineSpec(model=args.model, backend="onnxruntime", threads=args.threads)
    )
    report: dict[str, object] = {"model": pipeline.model_id, "seeds": args.seeds}
    report.update(evaluate(pipeline, phantom_set(args.seeds, args.frames_per_seed)))
    if args.runs:
        image = phantom_frame(spec_for_seed(args.seeds[0]), 0).image
        report["latency"] = {"threads": args.threads, **measure_latency(pipeline, image, args.runs)}
    pipeline.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
