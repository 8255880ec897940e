"""Before/after pictures of the overlay on real cines: model output everywhere vs. clipped to
the imaging region and off colour pixels (docs/overlay.md shows them).

    python -m tools.roi_pictures FILE.dcm OUT.png [--roi auto|dicom|default|x0,y0,x1,y1]
        [--frame N] [--model us-seg] [--width 640]

The frames go through the grab stage's `RoiSource` (so `auto` sees the cine from its first frame,
looped to at least 40 frames), the model through `engines` on ONNX Runtime, and the drawing
through the render stage's `OverlayPolicy` and `ClippedOverlay`. Left: the mask drawn everywhere;
right: as the renderer draws it, with the region's outline (green, 1 px) for reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from engines.api import EngineSpec
from engines.pipeline import load_pipeline
from stream.frame import Annotations, Frame
from stream.render.color import to_bgr
from stream.render.mask import MaskAnnotator
from stream.render.overlay_policy import ClippedOverlay, OverlayPolicy
from stream.roi.region import Region, region_from_meta
from stream.roi.setting import parse_roi_setting
from stream.roi.source import RoiSource
from stream.sources.dicom import DicomSource, DicomSpec


def _roi_value(text: str) -> object:
    if "," in text:
        return [float(v) for v in text.split(",")]
    return text


def picture(path: Path, roi: str, frame_index: int, model: str, width: int) -> np.ndarray:
    source = RoiSource(
        DicomSource(DicomSpec(path=str(path), loop=True)),
        parse_roi_setting(_roi_value(roi), "--roi"),
    )
    cap = None
    for _ in range(frame_index + 1):
        cap = source.read()
    assert cap is not None
    source.close()
    pipe = load_pipeline(EngineSpec(model=model, backend="onnxruntime"))
    result = pipe(cap.image, cap.pixel_format)
    pipe.close()
    mask = result.mask
    assert mask is not None
    frame = Frame(
        "s",
        0,
        0,
        0,
        cap.image,
        cap.pixel_format,
        parts={"mask": mask},
        meta=cap.meta,
        annotations=Annotations(model=model, labels=pipe.labels),
    )
    base = to_bgr(cap.image, cap.pixel_format)
    annotator = MaskAnnotator()
    before = annotator.annotate(base, mask)
    after = base.copy()
    decision = OverlayPolicy().decide(after, frame, frame, cap.pixel_format == "gray8")
    if decision.shown:
        clip = ClippedOverlay()
        clip.draw(
            after,
            decision.allowed,
            lambda c: annotator.draw(c, clip.clip_labels(mask, decision.allowed)),
        )
    else:
        cv2.putText(
            after,
            f"overlay off: {decision.message}",
            (8, 20),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 191, 255),
            1,
            cv2.LINE_AA,
        )
    region = region_from_meta(cap.meta)
    if isinstance(region, Region):
        pts = np.round(np.asarray(region.polygon)).astype(np.int32)
        cv2.polylines(after, [pts], True, (0, 200, 0), 1)
    pair = np.concatenate([before, np.full((base.shape[0], 4, 3), 255, np.uint8), after], axis=1)
    f = min(1.0, width / pair.shape[1])
    return cv2.resize(pair, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else pair


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--roi", default="default")
    p.add_argument(
        "--frame", type=int, default=30, help="frame index (after the detector warmed up)"
    )
    p.add_argument("--model", default="us-seg")
    p.add_argument("--width", type=int, default=800, help="width of the side-by-side picture")
    args = p.parse_args(argv)
    img = picture(args.file, args.roi, args.frame, args.model, args.width)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
