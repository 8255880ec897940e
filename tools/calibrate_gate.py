"""Calibrate a model's applicability gate and write it into its card (`applicability`).

    python -m tools.calibrate_gate us-seg            # one bundled model
    python -m tools.calibrate_gate --all             # every bundled network (after retraining)
    python -m tools.calibrate_gate us-seg --check    # print the figures, write nothing

1. Reference statistics: engines/applicability.frame_features of the model's training frames
   (the synthetic source it was trained on, seeds as in its card; through its input model first
   when the card names one, e.g. us-seg-dn after us-denoise), fitted as mean + inverse covariance.
2. Threshold: MARGIN x the highest score over the demo's frames: the source of the model's demo
   config (configs/ultrasound_seg.yaml, configs/endoscopy_instruments.yaml) with its seed and
   CALIBRATION_SEEDS - 1 more, CALIBRATION_FRAMES frames across 6 s each.
3. Also restores the card's intended use, training data, notice and confidence threshold where
   a retrained card lacks them (tools/card_info.py).
4. Check: the share of held-out demo frames (other seeds) above the threshold must stay under
   1 % (else exit 1); the real ultrasound cines (pydicom, pydicom-data) are scored and their share
   above the threshold printed (for gray models), as is each one's median score.

Deterministic; takes about a minute per model on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import yaml

from engines import EngineSpec, load_pipeline
from engines.applicability import METHOD, Reference, frame_features
from engines.registry import MODELS_DIR, list_models, resolve_model
from stream.sources.endoscopy import EndoscopySpec, endoscopy_frame
from stream.sources.phantom import PhantomSpec, phantom_frame, pixel_format_of
from tools.card_info import fill_card_info
from tools.eval_common import parse_seeds
from tools.eval_seg import spec_for_seed
from tools.gate_data import dicom_frames, real_us_files

MARGIN = 2.0  # unseen phantom scenes reach ~1.2x the max; every real frame is >= 1.9x the threshold
CALIBRATION_SEEDS = 12  # scene layouts: the score varies more between seeds than within one
CALIBRATION_FRAMES = 30
CALIBRATION_STRIDE = 6  # frames apart: 30 frames span 6 s of the demo at 30 fps
HELD_OUT_SEED_OFFSET = 1000  # held-out demo seeds: the demo's seed + 1000 + k
MAX_HELD_OUT_ABOVE = 0.01
REFERENCE_FRAMES_PER_SEED = 6
REFERENCE_STRIDE = 37
REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIGS = {"gray": "configs/ultrasound_seg.yaml", "bgr": "configs/endoscopy_instruments.yaml"}

Frames = Iterator[tuple[np.ndarray, str]]


def _demo_source(channels: str) -> dict:
    """The `source:` of the grab stage in the model's demo config."""
    cfg = yaml.safe_load((REPO / DEMO_CONFIGS[channels]).read_text())
    for stage in cfg["stages"]:
        if stage.get("kind") == "grab":
            return dict(stage["source"])
    raise SystemExit(f"{DEMO_CONFIGS[channels]}: no grab stage")


def _spec_from(source: dict, seed: int) -> PhantomSpec | EndoscopySpec:
    kind = source.get("type")
    cls = PhantomSpec if kind == "phantom" else EndoscopySpec
    names = {f.name for f in fields(cls)}
    return cls(**{**{k: v for k, v in source.items() if k in names}, "seed": seed})  # type: ignore[arg-type]


def _frames(spec: PhantomSpec | EndoscopySpec, count: int, stride: int) -> Frames:
    for k in range(count):
        if isinstance(spec, PhantomSpec):
            yield phantom_frame(spec, k * stride).image, pixel_format_of(spec)
        else:
            yield endoscopy_frame(spec, k * stride).image, "bgr8"


def _training_specs(card: dict, channels: str) -> list[PhantomSpec | EndoscopySpec]:
    seeds = parse_seeds(str(card.get("training", {}).get("train_seeds", "0-95")))
    if channels == "bgr":
        return [EndoscopySpec(seed=s) for s in seeds]
    scene = str(card.get("training", {}).get("scene", "classic"))  # train_seg --scene
    scenes = ("classic", "anatomy") if scene == "mix" else (scene,)
    return [spec_for_seed(s, sc) for s in seeds for sc in scenes]


def calibrate(model: str, check: bool) -> int:
    ref = resolve_model(model)
    card = ref.card.raw
    channels = ref.card.input.channels
    input_model = card.get("training", {}).get("input_model")
    feed: Callable[[np.ndarray, str], tuple[np.ndarray, str]] = lambda im, fmt: (im, fmt)  # noqa: E731
    if input_model:
        pre = load_pipeline(EngineSpec(model=input_model, backend="onnxruntime"))

        def feed(im: np.ndarray, fmt: str) -> tuple[np.ndarray, str]:
            out = pre(im, fmt).image
            assert out is not None
            return out, "gray8" if out.ndim == 2 else fmt

    def features(frames: Frames) -> np.ndarray:
        return np.array([frame_features(*feed(im, fmt)) for im, fmt in frames])

    train = np.concatenate(
        [
            features(_frames(spec, REFERENCE_FRAMES_PER_SEED, REFERENCE_STRIDE))
            for spec in _training_specs(card, channels)
        ]
    )
    reference = Reference.fit(train)
    source = _demo_source(channels)
    seed0 = int(source.get("seed", 0))

    def demo_scores(seeds: range) -> np.ndarray:
        f = np.concatenate(
            [
                features(
                    _frames(_spec_from(source, s), CALIBRATION_FRAMES, CALIBRATION_STRIDE)
                )
                for s in seeds
            ]
        )
        return np.array([reference.score(v) for v in f])

    calib = demo_scores(range(seed0, seed0 + CALIBRATION_SEEDS))
    threshold = round(float(MARGIN * calib.max()), 3)
    held = demo_scores(
        range(seed0 + HELD_OUT_SEED_OFFSET, seed0 + HELD_OUT_SEED_OFFSET + CALIBRATION_SEEDS)
    )
    above = float(np.mean(held > threshold))
    print(
        f"{model}: {len(train)} training frames; demo frames ({len(calib)}) score "
        f"median {np.median(calib):.3f} max {calib.max():.3f} -> threshold {threshold:.3f}; "
        f"held-out demo frames above it: {above:.2%} (max {held.max():.3f})"
    )
    real_above: dict[str, float] = {}
    if channels == "gray":
        for path in real_us_files():
            s = np.array([reference.score(frame_features(*feed(im, fmt))) for im, fmt in dicom_frames(path)])
            real_above[path.name] = float(np.mean(s > threshold))
            print(f"  real {path.name:30s} frames {len(s):3d} median score {np.median(s):7.3f}  above: {real_above[path.name]:.0%}")
    if above >= MAX_HELD_OUT_ABOVE:
        print(f"{model}: {above:.2%} of held-out demo frames above the threshold (limit 1%)")
        return 1
    if check:
        return 0
    card["applicability"] = {
        "method": METHOD,
        "threshold": threshold,
        "calibration": (
            f"python -m tools.calibrate_gate {model}: reference = {len(train)} training frames; "
            f"threshold = {MARGIN} x max score over {len(calib)} demo frames "
            f"({DEMO_CONFIGS[channels]} source, seeds {seed0}-{seed0 + CALIBRATION_SEEDS - 1}); "
            f"held-out demo frames above: {above:.2%}"
            + (
                f"; real ultrasound cines above: {min(real_above.values()):.0%}-"
                f"{max(real_above.values()):.0%} of frames"
                if real_above
                else ""
            )
        ),
        **reference.to_card(),
    }
    added = fill_card_info(card, model)  # a retrained card lacks them
    path = Path(ref.onnx_path).with_name("card.json")
    path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {path}" + (f" (added {', '.join(added)})" if added else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("models", nargs="*", help="bundled model names (default with --all: all)")
    ap.add_argument("--all", action="store_true", help="every bundled segmentation network")
    ap.add_argument("--check", action="store_true", help="print the figures, write nothing")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    models = list(args.models)
    if args.all:
        models += [
            m
            for m in list_models()
            if json.loads((MODELS_DIR / m / "card.json").read_text())["task"] == "segmentation"
        ]
    if not models:
        ap.error("name a model, or --all")
    return max(calibrate(m, args.check) for m in models)


if __name__ == "__main__":
    sys.exit(main())
