"""Evaluate a segmentation model on held-out phantom frames: Dice, accuracy and latency.

    python -m tools.eval_seg --model us-seg --seeds 2000-2015 --frames-per-seed 4
    python -m tools.eval_seg --model us-seg --scene anatomy   # the anatomy phantom (bgr8 frames)

Runs the real inference pipeline (`engines.load_pipeline`, preprocess + ONNX Runtime +
postprocess) on 512 x 512 phantom frames and compares its label map with the phantom's truth.
Dice per class = 2 TP / (2 TP + FP + FN) over all pixels of all frames together; pixel accuracy
counts the pixels inside the probe's field of view. Latency: median and p90 per call on one
frame, after a warm-up, with OpenCV and ONNX Runtime limited to `--threads`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict

import numpy as np

from engines import InferencePipeline
from stream.sources.phantom import (
    LABELS,
    PhantomSpec,
    RealismSpec,
    fov_mask,
    phantom_frame,
    pixel_format_of,
)
from tools.eval_common import (
    FRAME_STRIDE,
    LabelledFrame,
    evaluate_segmentation,
    held_out_parser,
    print_held_out_report,
)

SCENES = ("classic", "anatomy", "mix")
GEOMETRIES = ("sector", "linear", "curvilinear")


def spec_for_seed(seed: int, scene: str = "classic") -> PhantomSpec:
    """The phantom used for `seed` in training and evaluation.

    classic: even seeds sector, odd linear, the phantom's other defaults. anatomy: geometry by
    seed % 3 (sector, linear, curvilinear), then depth, opening, aperture, probe radius, gain,
    speckle and the Doppler / reverberation switches drawn from the seed (domain randomisation;
    UI always on). mix: classic where (seed // 2) is even, else anatomy.
    """
    if scene == "mix":
        scene = "classic" if (seed // 2) % 2 == 0 else "anatomy"
    if scene == "classic":
        return PhantomSpec(seed=seed, geometry="sector" if seed % 2 == 0 else "linear")
    if scene != "anatomy":
        raise ValueError(f"unknown phantom scene {scene!r}; expected one of {SCENES}")
    rng = np.random.default_rng([seed, 7919])
    geometry = GEOMETRIES[seed % 3]

    def u(lo: float, hi: float) -> float:
        return round(float(rng.uniform(lo, hi)), 1)

    depth = {"sector": u(90, 160), "linear": u(25, 60), "curvilinear": u(80, 180)}[geometry]
    return PhantomSpec(
        seed=seed,
        scene="anatomy",
        geometry=geometry,  # type: ignore[arg-type]
        depth_mm=depth,
        sector_deg=u(60, 90) if geometry == "sector" else u(50, 75),
        aperture_mm=u(30, 50),
        radius_mm=u(40, 60),
        gain_db=u(-6, 6),
        speckle=u(0.8, 1.3),
        realism=RealismSpec(
            doppler=None if rng.random() < 0.7 else False,
            reverb=None if rng.random() < 0.7 else False,
        ),
    )


def phantom_card(scene: str = "classic") -> dict[str, object]:
    """The phantom settings of `spec_for_seed` for `scene`, for a model card."""
    spec = asdict(spec_for_seed(0))
    classic = {k: v for k, v in spec.items() if k not in ("seed", "geometry", "scene", "realism")}
    classic = {k: v for k, v in classic.items() if k not in ("radius_mm", "gain_db")}
    if scene == "classic":
        return {"phantom": classic, "geometry": "even seeds sector, odd seeds linear"}
    return {
        "scene": scene,
        "phantom": classic,
        "geometry": "classic seeds: even sector, odd linear; anatomy seeds: seed % 3 = 0 "
        "sector, 1 linear, 2 curvilinear",
        "seeds": "classic where (seed // 2) is even, anatomy where odd"
        if scene == "mix"
        else "all anatomy",
        "anatomy_randomisation": "per seed: depth 90-160 mm (sector), 25-60 (linear), 80-180 "
        "(curvilinear); opening 60-90 deg (sector), 50-75 (curvilinear); aperture 30-50 mm; "
        "probe radius 40-60 mm; gain -6..6 dB; TGC sliders sigma 3 dB; speckle 0.8-1.3; "
        "Doppler box and reverberation each on with probability 0.7; scanner UI always",
    }


def phantom_set(
    seeds: Iterable[int], frames_per_seed: int, offset: int = 0, scene: str = "classic"
) -> Iterator[tuple[PhantomSpec, int]]:
    """(spec, frame index) pairs: `frames_per_seed` frames FRAME_STRIDE apart for each seed."""
    for seed in seeds:
        spec = spec_for_seed(seed, scene)
        for k in range(frames_per_seed):
            yield spec, offset + k * FRAME_STRIDE


def _labelled(frames: Iterable[tuple[PhantomSpec, int]]) -> Iterator[LabelledFrame]:
    for spec, index in frames:
        frame = phantom_frame(spec, index)
        yield frame.image, frame.truth, fov_mask(spec)


def evaluate(
    pipeline: InferencePipeline, frames: Iterable[tuple[PhantomSpec, int]]
) -> dict[str, object]:
    """Dice per class, mean foreground Dice and in-FOV pixel accuracy over `frames`."""
    return evaluate_segmentation(pipeline, _labelled(frames), LABELS, "auto")


def _first_frame(spec: PhantomSpec) -> tuple[np.ndarray, str]:
    return phantom_frame(spec, 0).image, pixel_format_of(spec)


def main(argv: list[str] | None = None) -> None:
    parser = held_out_parser(__doc__.splitlines()[0], "us-seg", runs=200, backend_option=False)
    parser.add_argument(
        "--scene", choices=SCENES, default="classic", help="phantom scene of the held-out frames"
    )
    args = parser.parse_args(argv)
    print_held_out_report(
        args,
        "onnxruntime",
        lambda pipeline: evaluate(
            pipeline, phantom_set(args.seeds, args.frames_per_seed, scene=args.scene)
        ),
        lambda: _first_frame(spec_for_seed(args.seeds[0], args.scene)),
        warmup=20,
    )


if __name__ == "__main__":
    main()
