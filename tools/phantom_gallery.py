"""Pictures of phantom frames beside their truth overlay, for looking at and for the docs.

    python -m tools.phantom_gallery --scene anatomy --seeds 0,1,2 --out docs/img

Writes one PNG per seed: the frame as the pipeline gets it (left) and the same frame with the
truth labels blended in (right: anechoic blue, lesion red, interface green), plus the ROI
polygon the source puts in `meta["roi"]` (yellow).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from stream.sources.phantom import PhantomSpec, _model, _model_key, phantom_frame, roi_polygon
from tools.eval_common import parse_seeds
from tools.eval_seg import spec_for_seed

COLOURS = np.array([[0, 0, 0], [255, 120, 0], [40, 40, 255], [40, 220, 40]], np.uint8)  # BGR


def gallery_image(spec: PhantomSpec, index: int) -> np.ndarray:
    """[frame | frame + truth overlay + ROI polygon] as one BGR image."""
    f = phantom_frame(spec, index)
    image = f.image if f.image.ndim == 3 else cv2.cvtColor(f.image, cv2.COLOR_GRAY2BGR)
    overlay = image.copy()
    labelled = f.truth > 0
    overlay[labelled] = (0.5 * image[labelled] + 0.5 * COLOURS[f.truth[labelled]]).astype(np.uint8)
    roi = np.array(roi_polygon(_model(_model_key(spec)).geo), np.int32)
    cv2.polylines(overlay, [roi], True, (0, 230, 230), 1)
    return np.hstack([image, overlay])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", choices=("classic", "anatomy"), default="anatomy")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-2"))
    p.add_argument("--index", type=int, default=20, help="frame index of each seed")
    p.add_argument("--size", type=int, default=384, help="frame width and height")
    p.add_argument("--out", type=Path, default=Path("out/phantom"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        spec = spec_for_seed(seed, args.scene)
        spec = PhantomSpec(**{**spec.__dict__, "width": args.size, "height": args.size})
        path = args.out / f"phantom_{args.scene}_{seed}.png"
        cv2.imwrite(str(path), gallery_image(spec, args.index), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{path} ({spec.geometry}, depth {spec.depth_mm:.0f} mm)")


if __name__ == "__main__":
    main()
