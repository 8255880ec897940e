"""Measure the automatic imaging-region detector on DICOM cines against their own regions.

    python -m tools.roi_measure FILE.dcm [FILE.dcm ...] [--png-dir DIR]

For each file: the frames are fed to `RegionDetector` in order (looped to at least 60 frames);
the table gives the IoU of the detected region with the file's 2D tissue region (DICOM
`SequenceOfUltrasoundRegions`; a file resized without updating its regions is compared with the
region scaled to its size, marked `scaled`), the fraction of UI pixels (outside the DICOM region
and not black in any frame: text, colour bar, ECG, rulers) that the detected region covers,
the frame at which a region was first known, and the detector's cost per frame.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.roi.detect import RegionDetector
from stream.roi.dicom_regions import dicom_region
from stream.roi.region import Region, iou, rect_polygon

MIN_FRAMES = 60
UI_LEVEL = 40  # brighter than this (any channel) in some frame: not background


def _frames(path: Path) -> tuple[Any, list[np.ndarray]]:
    """The dataset and every frame as RGB, decoded by the pipeline's own DICOM source."""
    from stream.sources.dicom import DicomSource, DicomSpec

    source = DicomSource(DicomSpec(path=str(path)))
    frames = []
    while (cap := source.read()) is not None:
        img = cap.image
        frames.append(img if img.ndim == 3 else np.repeat(img[..., None], 3, 2))
    source.close()
    return source.ds, frames


def reference_region(ds: Any, rows: int, cols: int) -> tuple[Region | None, str]:
    region, _ = dicom_region(ds, rows, cols)
    if region is not None:
        return region, "dicom"
    for r in ds.get("SequenceOfUltrasoundRegions") or []:
        if int(r.RegionSpatialFormat) == 1 and int(r.RegionDataType) == 1:
            # a resized file: scale the region by the ratio of its extent to the image
            f = min(
                cols / (int(r.RegionLocationMaxX1) + 40), rows / (int(r.RegionLocationMaxY1) + 60)
            )
            f = 0.5 if abs(f - 0.5) < 0.1 else f
            x0, y0, x1, y1 = (
                int(r.get(k)) * f
                for k in (
                    "RegionLocationMinX0",
                    "RegionLocationMinY0",
                    "RegionLocationMaxX1",
                    "RegionLocationMaxY1",
                )
            )
            return Region(
                "dicom", rect_polygon(x0, y0, min(x1, cols - 1), min(y1, rows - 1))
            ), "scaled"
    return None, "none"


def measure(path: Path, png_dir: Path | None, noise: float = 0.0) -> dict[str, Any]:
    ds, frames = _frames(path)
    if noise:  # analog capture noise on every pixel, UI included
        rng = np.random.default_rng(0)
        frames = [
            np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8) for f in frames
        ]
    rows, cols = frames[0].shape[:2]
    det = RegionDetector()
    loops = max(1, -(-MIN_FRAMES // len(frames)))
    seq = (frames * loops)[: max(MIN_FRAMES, len(frames))]
    first_known = None
    t = time.perf_counter()
    for i, f in enumerate(seq):
        if det.update(f) is not None and first_known is None:
            first_known = i
    ms = (time.perf_counter() - t) * 1000 / len(seq)
    ref, kind = reference_region(ds, rows, cols)
    out: dict[str, Any] = {
        "file": path.name,
        "frames": len(frames),
        "size": f"{cols}x{rows}",
        "first_known": first_known,
        "ms_per_frame": round(ms, 3),
        "changes": det.changes,
        "reference": kind,
    }
    got = det.region.mask(rows, cols) if det.region else np.zeros((rows, cols), bool)
    stack = np.stack(frames)
    bright = stack.max(axis=(0, 3)) > UI_LEVEL
    if ref is not None:
        ref_mask = ref.mask(rows, cols)
        out["iou"] = round(iou(got, ref_mask), 3)
        # the fan: convex hull of the pixels inside the DICOM region that ever change
        ever = ((stack.max(axis=0) - stack.min(axis=0)).max(axis=2) > 0) & ref_mask
        pts = np.column_stack(np.nonzero(ever)[::-1]).astype(np.int32)
        if len(pts) >= 3:
            fan = np.zeros((rows, cols), np.uint8)
            cv2.fillPoly(fan, [cv2.convexHull(pts)], 1)
            out["iou_fan"] = round(iou(got, fan.view(bool)), 3)
        ui = bright & ~ref_mask
        out["ui_pixels"] = int(ui.sum())
        out["ui_inside"] = round(float((ui & got).sum() / max(1, ui.sum())), 4)
    static = (stack.max(axis=0) - stack.min(axis=0)).max(axis=2) <= 4
    ui_static = static & bright
    out["static_ui_inside"] = round(float((ui_static & got).sum() / max(1, ui_static.sum())), 4)
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        img = cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR)
        if ref is not None:
            pts = np.round(np.asarray(ref.polygon)).astype(np.int32)
            cv2.polylines(img, [pts], True, (255, 255, 0), 1)
        if det.region is not None:
            pts = np.round(np.asarray(det.region.polygon)).astype(np.int32)
            cv2.polylines(img, [pts], True, (0, 255, 0), 2)
        cv2.imwrite(str(png_dir / f"roi_{path.stem}.png"), img)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--png-dir", type=Path, default=None, help="write each file's regions as PNG")
    p.add_argument("--noise", type=float, default=0.0, help="add Gaussian noise of this sigma")
    args = p.parse_args(argv)
    cols = (
        "file",
        "frames",
        "size",
        "reference",
        "iou",
        "iou_fan",
        "ui_inside",
        "static_ui_inside",
        "first_known",
        "changes",
        "ms_per_frame",
    )
    print(" | ".join(cols))
    for f in args.files:
        r = measure(f, args.png_dir, args.noise)
        print(" | ".join(str(r.get(c, "-")) for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
