"""Evaluate an instrument-segmentation model on held-out synthetic endoscopy frames.

    python -m tools.eval_endo --model endo-instruments --seeds 2000-2015 --frames-per-seed 4

Runs the real pipeline on 640 x 480 BGR frames of `stream.sources.endoscopy` and compares its
label map with the truth: Dice per class (pixels of all frames pooled), pixel accuracy inside
the circular field of view, latency (median / p90 per call on one frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from engines import InferencePipeline
from stream.sources.endoscopy import LABELS, EndoscopySpec, endoscopy_frame
from tools.eval_common import (
    FRAME_STRIDE,
    LabelledFrame,
    evaluate_segmentation,
    held_out_parser,
    print_held_out_report,
)


def endo_set(seeds: Iterable[int], frames_per_seed: int) -> Iterator[tuple[EndoscopySpec, int]]:
    for seed in seeds:
        for k in range(frames_per_seed):
            yield EndoscopySpec(seed=seed), k * FRAME_STRIDE


def labelled_frames(frames: Iterable[tuple[EndoscopySpec, int]]) -> Iterator[LabelledFrame]:
    """(image, truth, field of view: the lit circle and any instrument) of each frame."""
    for spec, index in frames:
        frame = endoscopy_frame(spec, index)
        yield frame.image, frame.truth, frame.image.any(axis=2) | (frame.truth > 0)


def evaluate_endo(
    pipeline: InferencePipeline, frames: Iterable[tuple[EndoscopySpec, int]]
) -> dict[str, object]:
    """Dice per class and pixel accuracy inside the circular field of view over `frames`."""
    return evaluate_segmentation(pipeline, labelled_frames(frames), LABELS, "bgr8")


def main(argv: list[str] | None = None) -> None:
    args = held_out_parser(__doc__.splitlines()[0], "endo-instruments", runs=100).parse_args(argv)
    print_held_out_report(
        args,
        "auto" if args.model.startswith("classical-") else args.backend,
        lambda pipeline: evaluate_endo(pipeline, endo_set(args.seeds, args.frames_per_seed)),
        lambda: (endoscopy_frame(EndoscopySpec(seed=args.seeds[0]), 0).image, "bgr8"),
        warmup=min(10, args.runs),
    )


if __name__ == "__main__":
    main()
