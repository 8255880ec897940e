"""Evaluate a segmentation model on held-out phantom frames: Dice, accuracy and latency.

    python -m tools.eval_seg --model us-seg --seeds 2000-2015 --frames-per-seed 4

Runs the real inference pipeline (`engines.load_pipeline`, preprocess + ONNX Runtime +
postprocess) on 512 x 512 phantom frames and compares its label map with the phantom's truth.
Dice per class = 2 TP / (2 TP + FP + FN) over all pixels of all frames together; pixel accuracy
counts the pixels inside the probe's field of view. Latency: median and p90 per call on one
frame, after a warm-up, with OpenCV and ONNX Runtime limited to `--threads`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict

from engines import InferencePipeline
from stream.sources.phantom import LABELS, PhantomSpec, fov_mask, phantom_frame
from tools.eval_common import (
    FRAME_STRIDE,
    LabelledFrame,
    evaluate_segmentation,
    held_out_parser,
    print_held_out_report,
)


def spec_for_seed(seed: int) -> PhantomSpec:
    """The phantom used for `seed` in training and evaluation: even seeds sector, odd linear."""
    return PhantomSpec(seed=seed, geometry="sector" if seed % 2 == 0 else "linear")


def phantom_card() -> dict[str, object]:
    """The phantom settings of `spec_for_seed` (all seeds alike), for a model card."""
    spec = asdict(spec_for_seed(0))
    return {
        "phantom": {k: v for k, v in spec.items() if k not in ("seed", "geometry")},
        "geometry": "even seeds sector, odd seeds linear",
    }


def phantom_set(
    seeds: Iterable[int], frames_per_seed: int, offset: int = 0
) -> Iterator[tuple[PhantomSpec, int]]:
    """(spec, frame index) pairs: `frames_per_seed` frames FRAME_STRIDE apart for each seed."""
    for seed in seeds:
        spec = spec_for_seed(seed)
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
    return evaluate_segmentation(pipeline, _labelled(frames), LABELS, "gray8")


def main(argv: list[str] | None = None) -> None:
    args = held_out_parser(
        __doc__.splitlines()[0], "us-seg", runs=200, backend_option=False
    ).parse_args(argv)
    print_held_out_report(
        args,
        "onnxruntime",
        lambda pipeline: evaluate(pipeline, phantom_set(args.seeds, args.frames_per_seed)),
        lambda: (phantom_frame(spec_for_seed(args.seeds[0]), 0).image, "gray8"),
        warmup=20,
    )


if __name__ == "__main__":
    main()
