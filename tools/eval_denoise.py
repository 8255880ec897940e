"""Evaluate a speckle-reduction model on held-out phantom frames: PSNR, SSIM and latency.

    python -m tools.eval_denoise --model us-denoise --seeds 2000-2015 --frames-per-seed 4

Runs the real pipeline (`engines.load_pipeline`) on 512 x 512 phantom frames (speckle as the
phantom's default) and compares its output image with the phantom's clean image inside the
field of view (tools/image_metrics.py). The noisy input's own PSNR and SSIM are reported too:
the baseline any denoiser must beat.
"""

from __future__ import annotations

from collections.abc import Iterable

from engines import InferencePipeline
from stream.sources.phantom import PhantomSpec, fov_mask, phantom_frame
from tools.eval_common import held_out_parser, print_held_out_report
from tools.eval_seg import phantom_set, spec_for_seed
from tools.image_metrics import ImageScores


def evaluate_denoise(
    pipeline: InferencePipeline, frames: Iterable[tuple[PhantomSpec, int]]
) -> dict[str, float | int]:
    """PSNR (pooled MSE), mean SSIM, mean GMSD and the pooled texture ratio of the output vs
    the clean image, and of the input."""
    outputs, inputs = ImageScores(), ImageScores()
    frames_seen = 0
    for spec, index in frames:
        frame = phantom_frame(spec, index)
        out = pipeline(frame.image, "gray8").image
        if out is None:
            raise ValueError(f"model {pipeline.model_id!r} gives no output image: not a denoiser")
        inside = fov_mask(spec)
        outputs.add(out, frame.clean, inside)
        inputs.add(frame.image, frame.clean, inside)
        frames_seen += 1
    o, i = outputs.result(), inputs.result()
    return {
        "psnr_db": o["psnr_db"],
        "ssim": o["ssim"],
        "input_psnr_db": i["psnr_db"],
        "input_ssim": i["ssim"],
        "gmsd": o["gmsd"],
        "input_gmsd": i["gmsd"],
        "texture_ratio": o["texture_ratio"],
        "input_texture_ratio": i["texture_ratio"],
        "frames": frames_seen,
    }


def main(argv: list[str] | None = None) -> None:
    args = held_out_parser(__doc__.splitlines()[0], "us-denoise", runs=100).parse_args(argv)
    print_held_out_report(
        args,
        args.backend,
        lambda pipeline: evaluate_denoise(pipeline, phantom_set(args.seeds, args.frames_per_seed)),
        lambda: (phantom_frame(spec_for_seed(args.seeds[0]), 0).image, "gray8"),
        warmup=20,
    )


if __name__ == "__main__":
    main()
