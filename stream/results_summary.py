"""The run report's `results` section: what detection and classification models said, per
rendered frame (a passthrough overlay counts once for every frame it is drawn on).

From the render stages' counters (stream.stages.render `count_results`): `result_frames_boxes`
(frames with at least one box), `result_boxes:<label index>` (boxes per label) and
`result_top1:<label index>` (frames whose most probable class is that label); the label names
come from the stage's `info["result_labels"]`. From the infer stages' counters: `boxes_cut`
(boxes a detector found beyond its `max_boxes`, per model run), in the section only when > 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from stream.frame import Annotations
from stream.stats import StageStats

BOXES = "result_boxes:"
TOP1 = "result_top1:"
FRAMES_WITH_BOXES = "result_frames_boxes"
BOXES_CUT = "boxes_cut"  # the infer stage's counter (stream.stages.infer)


def count_results(stats: StageStats, ann: Annotations) -> None:
    """Count one rendered frame's boxes and top-1 class (nothing for a frame without them)."""
    if not ann.boxes and not ann.classes:
        return
    stats.info["result_labels"] = list(ann.labels)
    if ann.boxes:
        stats.count(FRAMES_WITH_BOXES)
        for box in ann.boxes:
            stats.count(f"{BOXES}{box.label}")
    if ann.classes:
        stats.count(f"{TOP1}{ann.classes[0][0]}")


def _by_label(total: Counter[str], prefix: str, labels: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in sorted(total.items()):
        if key.startswith(prefix) and n:
            index = key[len(prefix) :]
            name = labels[int(index)] if index.isdigit() and int(index) < len(labels) else index
            out[name] = out.get(name, 0) + n
    return out


def results_summary(
    counters: Iterable[Counter[str]], labels: Sequence[str], boxes_cut: int = 0
) -> dict[str, Any]:
    """The report section, summed over the render stages' counters; `boxes_cut`: the infer
    stages' total (the key only when > 0)."""
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    section: dict[str, Any] = {
        "frames_with_boxes": total[FRAMES_WITH_BOXES],
        "boxes": _by_label(total, BOXES, labels),
        "top1": _by_label(total, TOP1, labels),
    }
    if boxes_cut > 0:
        section["boxes_cut"] = boxes_cut
    return section


def format_results(section: dict[str, Any]) -> list[str]:
    """Lines for the text report (none when no model gave boxes or classes)."""
    lines = []
    cut = section.get("boxes_cut", 0)
    cut_text = f"{cut} boxes cut by engine.max_boxes in model runs (raise it to keep them)"
    if section["boxes"]:
        named = ", ".join(f"{k} {v}" for k, v in section["boxes"].items())
        lines.append(
            f"detections: {sum(section['boxes'].values())} boxes on "
            f"{section['frames_with_boxes']} frames ({named})" + (f"; {cut_text}" if cut else "")
        )
    elif cut:
        lines.append(f"detections: {cut_text}")
    if section["top1"]:
        lines.append("classification top-1: " + ", ".join(f"{k} {v}" for k, v in section["top1"].items()))
    return lines
