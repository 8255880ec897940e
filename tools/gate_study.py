"""Which applicability score separates the phantom from real ultrasound? Measure, print, JSON.

    python -m tools.gate_study [--model us-seg] [--out out/gate_study.json]

Candidates, each a per-frame score (higher = further from the training data):
  input_stats      Mahalanobis distance of image statistics (engines/applicability.py) to the
                   training frames' (fitted here on training-like phantom seeds)
  mean_uncertainty mean over pixels of 1 - softmax margin (the model's own doubt)
  low_margin_frac  share of pixels with softmax margin < 0.5
Reported: AUROC phantom-demo (negatives) vs real cines (positives), the score distributions,
and the cost per frame at 512 x 512.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from engines.applicability import Reference, frame_features, softmax_margin
from engines.preprocess import preprocess
from engines.registry import resolve_model
from tools.gate_data import dicom_frames, phantom_frames, real_us_files, synthetic_ood_frames

REFERENCE_SEEDS = range(0, 48)  # training seeds (tools/train_seg: 0-95)
DEMO_SEEDS = (2024, 2025, 2026, 2027, 3000, 3001)  # the demo's seed and other held-out ones


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties counted half."""
    neg, pos = np.asarray(neg, float), np.asarray(pos, float)
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="us-seg")
    ap.add_argument("--out", default="out/gate_study.json")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    import onnxruntime as ort

    ref = resolve_model(args.model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(ref.onnx_path), opts, providers=["CPUExecutionProvider"])

    def logits(image: np.ndarray, fmt: str) -> np.ndarray:
        x = preprocess(image, fmt, ref.card.input)
        return sess.run([ref.card.output], {ref.card.input.name: x})[0][0]

    def pred_scores(image: np.ndarray, fmt: str) -> tuple[float, float]:
        m = softmax_margin(logits(image, fmt))
        return float(1.0 - m.mean()), float((m < 0.5).mean())

    train = np.array(
        [frame_features(im, f) for s in REFERENCE_SEEDS for im, f in phantom_frames(s, 6, 37)]
    )
    reference = Reference.fit(train)
    groups: dict[str, list[tuple[str, str]]] = {}
    sets: dict[str, list[tuple[np.ndarray, str]]] = {}
    for seed in DEMO_SEEDS:
        sets[f"phantom seed {seed}"] = list(phantom_frames(seed, 30, 4))
        groups.setdefault("phantom", []).append((f"phantom seed {seed}", "neg"))
    for path in real_us_files():
        sets[path.name] = list(dicom_frames(path))
        groups.setdefault("real", []).append((path.name, "pos"))
    for name, frame in synthetic_ood_frames():
        sets[name] = [frame]
        groups.setdefault("synthetic", []).append((name, "pos"))

    scores: dict[str, dict[str, list[float]]] = {}
    for name, frames in sets.items():
        rows = [
            (reference.score(frame_features(im, f)), *pred_scores(im, f)) for im, f in frames
        ]
        arr = np.array(rows)
        scores[name] = {
            "input_stats": arr[:, 0].tolist(),
            "mean_uncertainty": arr[:, 1].tolist(),
            "low_margin_frac": arr[:, 2].tolist(),
        }
    methods = ("input_stats", "mean_uncertainty", "low_margin_frac")
    neg = {m: np.concatenate([scores[n][m] for n, _ in groups["phantom"]]) for m in methods}
    real = {m: np.concatenate([scores[n][m] for n, _ in groups["real"]]) for m in methods}
    print(f"{'set':32s} {'n':>4s} " + " ".join(f"{m + ' min/med/max':>28s}" for m in methods))
    for name, s in scores.items():
        cells = []
        for m in methods:
            v = np.array(s[m])
            cells.append(f"{v.min():8.3f} {np.median(v):8.3f} {v.max():8.3f}  ")
        print(f"{name:32s} {len(s[methods[0]]):4d} " + " ".join(cells))
    print()
    result: dict[str, object] = {"model": args.model, "sets": scores, "auroc": {}, "cost_ms": {}}
    image = next(phantom_frames(2024, 1, 1))[0]
    for m in methods:
        a = auroc(neg[m], real[m])
        per_file = {n: auroc(neg[m], np.array(scores[n][m])) for n, _ in groups["real"]}
        result["auroc"][m] = {"all_real": a, "per_file": per_file}  # type: ignore[index]
        print(f"AUROC {m:18s} phantom vs real: {a:.4f}  worst file: {min(per_file.values()):.4f}")
    # cost per 512 x 512 frame: the statistics alone; the margin map from logits already computed
    lg = logits(image, "gray8")
    for name, fn in (
        ("input_stats", lambda: reference.score(frame_features(image, "gray8"))),
        ("softmax_margin", lambda: softmax_margin(lg)),
    ):
        fn()
        t0 = time.perf_counter()
        for _ in range(200):
            fn()
        ms = (time.perf_counter() - t0) / 200 * 1e3
        result["cost_ms"][name] = ms  # type: ignore[index]
        print(f"cost {name:16s} {ms:.3f} ms per frame")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
