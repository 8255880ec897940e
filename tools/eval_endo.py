"""Evaluate an instrument-segmentation model on held-out synthetic endoscopy frames.

    python -m tools.eval_endo --model endo-instruments --seeds 2000-2015 --frames-per-seed 4

Runs the real pipeline on 640 x 480 BGR frames of `stream.sources.endoscopy` and compares its
label map with the truth: Dice per class (pixels of all frames pooled), pixel accuracy inside
the circular field of view, latency (median / p90 per call on one frame).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from engines import EngineSpec, InferencePipeline, load_pipeline
from stream.sources.endoscopy import LABELS, EndoscopySpec, endoscopy_frame
from tools.eval_seg import FRAME_STRIDE, confusion, dice_scores, parse_seeds


def endo_set(seeds: Iterable[int], frames_per_seed: int) -> Iterator[tuple[EndoscopySpec, int]]:
    for seed in seeds:
        for k in range(frames_per_seed):
            yield EndoscopySpec(seed=seed), k * FRAME_STRIDE


def evaluate_endo(
    pipeline: InferencePipeline, frames: Iterable[tuple[EndoscopySpec, int]]
) -> dict[str, object]:
    n = len(LABELS)
    conf = np.zeros((n, n), np.int64)
    fov_conf = np.zeros((n, n), np.int64)
    count = 0
    for spec, index in frames:
        frame = endoscopy_frame(spec, index)
        pred = pipeline(frame.image, "bgr8").mask
        if pred is None:
            raise ValueError(f"model {pipeline.model_id!r} gives no label map")
        conf += confusion(pred, frame.truth, n)
        inside = frame.image.any(axis=2) | (frame.truth > 0)
        fov_conf += confusion(pred[inside], frame.truth[inside], n)
        count += 1
    result = dice_scores(conf, LABELS)
    result["pixel_accuracy_fov"] = float(np.trace(fov_conf) / fov_conf.sum())
    result["frames"] = count
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="endo-instruments")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("2000-2015"))
    parser.add_argument("--frames-per-seed", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100, help="latency runs (0: skip)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)

    backend = "auto" if args.model.startswith("classical-") else args.backend
    pipeline = load_pipeline(EngineSpec(model=args.model, backend=backend, threads=args.threads))
    report: dict[str, object] = {"model": pipeline.model_id, "seeds": args.seeds}
    report.update(evaluate_endo(pipeline, endo_set(args.seeds, args.frames_per_seed)))
    if args.runs:
        image = endoscopy_frame(EndoscopySpec(seed=args.seeds[0]), 0).image
        report["latency"] = {
            "threads": args.threads,
            **measure_latency_bgr(pipeline, image, args.runs),
        }
    pipeline.close()
    print(json.dumps(report, indent=2))


def measure_latency_bgr(
    pipeline: InferencePipeline, image: np.ndarray, runs: int
) -> dict[str, float]:
    """tools.eval_seg.measure_latency for a BGR frame."""
    import time

    for _ in range(min(10, runs)):
        pipeline(image, "bgr8")
    totals, stages = [], []
    for _ in range(runs):
        t = time.perf_counter()
        r = pipeline(image, "bgr8")
        totals.append((time.perf_counter() - t) * 1e3)
        stages.append(r.timings_ms)
    out = {
        "pipeline_median_ms": float(np.median(totals)),
        "pipeline_p90_ms": float(np.percentile(totals, 90)),
    }
    for name in stages[0]:
        out[f"{name}_median_ms"] = float(np.median([s[name] for s in stages]))
    out["runs"] = runs
    return out


if __name__ == "__main__":
    main()
