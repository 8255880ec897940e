"""Evaluate a speckle-reduction model on held-out phantom frames: PSNR, SSIM and latency.

    python -m tools.eval_denoise --model us-denoise --seeds 2000-2015 --frames-per-seed 4

Runs the real pipeline (`engines.load_pipeline`) on 512 x 512 phantom frames (speckle as the
phantom's default) and compares its output image with the phantom's clean image inside the
field of view (tools/image_metrics.py). The noisy input's own PSNR and SSIM are reported too:
the baseline any denoiser must beat.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from engines import InferencePipeline
from stream.sources.phantom import PhantomSpec, fov_mask, phantom_frame
from tools.eval_common import held_out_parser, print_held_out_report
from tools.eval_seg import phantom_set, spec_for_seed
from tools.image_metrics import (
    gmsd,
    psnr_from_sse,
    squared_error,
    ssim,
    texture_ratio,
    texture_variance,
)


def evaluate_denoise(
    pipeline: InferencePipeline, frames: Iterable[tuple[PhantomSpec, int]]
) -> dict[str, float | int]:
    """PSNR (pooled MSE), mean SSIM, mean GMSD and the pooled texture ratio of the output vs
    the clean image, and of the input."""
    sse = {"out": 0.0, "in": 0.0}
    ssims: dict[str, list[float]] = {"out": [], "in": []}
    gmsds: dict[str, list[float]] = {"out": [], "in": []}
    tex = {"out": [0.0, 0.0], "in": [0.0, 0.0]}
    count = frames_seen = 0
    for spec, index in frames:
        frame = phantom_frame(spec, index)
        out = pipeline(frame.image, "gray8").image
        if out is None:
            raise ValueError(f"model {pipeline.model_id!r} gives no output image: not a denoiser")
        inside = fov_mask(spec)
        for key, img in (("out", out), ("in", frame.image)):
            err, n = squared_error(img, frame.clean, inside)
            sse[key] += err
            ssims[key].append(ssim(img, frame.clean, inside))
            gmsds[key].append(gmsd(img, frame.clean, inside))
            var_img, var_clean = texture_variance(img, frame.clean, inside)
            tex[key][0] += var_img
            tex[key][1] += var_clean
        count += n
        frames_seen += 1
    return {
        "psnr_db": psnr_from_sse(sse["out"], count),
        "ssim": float(np.mean(ssims["out"])),
        "input_psnr_db": psnr_from_sse(sse["in"], count),
        "input_ssim": float(np.mean(ssims["in"])),
        "gmsd": float(np.mean(gmsds["out"])),
        "input_gmsd": float(np.mean(gmsds["in"])),
        "texture_ratio": texture_ratio((tex["out"][0], tex["out"][1])),
        "input_texture_ratio": texture_ratio((tex["in"][0], tex["in"][1])),
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
