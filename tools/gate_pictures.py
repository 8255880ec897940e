"""Pictures of what the model says on the phantom and on real cines, with the gate's verdict.

    python -m tools.gate_pictures [--model us-seg] [--out docs/images/gate] [--all]

For each frame one PNG of three panels, all drawn by the render stage's own annotators: the frame,
the label overlay as it would be drawn without the gate (legend and notice included), and the
confidence heat-map; under them the applicability score, threshold and verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from engines import EngineSpec, load_pipeline
from stream.frame import Annotations, Frame
from stream.render.color import to_bgr
from stream.render.explain import ModelExplainer
from stream.render.mask import MaskAnnotator
from tools.gate_data import dicom_frames, phantom_frames, real_us_files

PANEL = 240  # each panel is scaled to this height
IN_DOCS = ("phantom_demo", "examples_ybr_color", "US1_UNCR", "gdcm-US-ALOKA-16")


def _panel(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (round(w * PANEL / h), PANEL), interpolation=cv2.INTER_AREA)


def picture(pipeline, image: np.ndarray, fmt: str, title: str) -> tuple[np.ndarray, dict]:  # type: ignore[no-untyped-def]
    result = pipeline(image, fmt)
    gate = result.applicability or {}
    frame = Frame(
        "x",
        0,
        0,
        0,
        image,
        fmt,
        parts={"mask": result.mask, "confidence": result.confidence},
        annotations=Annotations(model=pipeline.model_id, labels=list(pipeline.labels)),
        meta={"model_card": pipeline.card_info, "applicability": gate},
    )
    raw = to_bgr(image, fmt)
    labels = raw.copy()
    explain = ModelExplainer("labels")
    explain.note(frame)
    MaskAnnotator().draw(labels, result.mask)
    explain.draw_panels(labels)
    heat = raw.copy()
    heat_explain = ModelExplainer("confidence")
    heat_explain.note(frame)
    heat_explain.draw_confidence(heat, frame)
    heat_explain.draw_panels(heat)
    row = np.hstack([_panel(raw), _panel(labels), _panel(heat)])
    verdict = "applicable" if gate.get("applicable") else "NOT APPLICABLE: overlay withheld"
    text = f"{title}: score {gate.get('score')} / threshold {gate.get('threshold')}: {verdict}"
    bar = np.zeros((28, row.shape[1], 3), np.uint8)
    colour = (80, 220, 80) if gate.get("applicable") else (60, 60, 255)
    cv2.putText(bar, text, (8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return np.vstack([row, bar]), gate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="us-seg")
    ap.add_argument("--out", default="docs/images/gate")
    ap.add_argument("--all", action="store_true", help=f"every file, not only {', '.join(IN_DOCS)}")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(EngineSpec(model=args.model, backend="onnxruntime"))
    frames: list[tuple[str, np.ndarray, str]] = []
    image, fmt = next(phantom_frames(2024, 1, 1, "sector"))
    frames.append(("phantom_demo", image, fmt))
    for path in real_us_files():
        image, fmt = next(dicom_frames(path, 1))
        frames.append((path.stem, image, fmt))
    for name, image, fmt in frames:
        if not args.all and name not in IN_DOCS:
            continue
        png, gate = picture(pipeline, image, fmt, name)
        cv2.imwrite(str(out / f"{name}.png"), png, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{name:30s} score {gate.get('score')} applicable {gate.get('applicable')}")
    pipeline.close()


if __name__ == "__main__":
    main()
