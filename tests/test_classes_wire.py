"""A classifier's top-k on the wire (optional `annotations.classes`), in the HUD and in the
run report's `results` section; and the classification postprocess."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engines.classification import scores_kind, top_k
from stream.clock import FakeClock
from stream.codec import DecodeError, decode, encode_frame
from stream.frame import Annotations, Box, Frame
from stream.render.hud import HudData, hud_lines
from stream.results_summary import count_results, format_results, results_summary
from stream.stats import StageStats


def frame(ann: Annotations) -> Frame:
    return Frame("s", 3, 10, 20, np.zeros((4, 6), np.uint8), annotations=ann)


def encoded_header(ann: Annotations) -> tuple[list, dict]:
    msg = encode_frame(frame(ann), "infer", 1, 5)
    return msg, json.loads(bytes(msg[1]))


def test_classes_round_trip_and_are_absent_when_empty() -> None:
    ann = Annotations(model="cls", labels=["a", "b", "c"], classes=[(2, 0.7), (0, 0.2)])
    msg, header = encoded_header(ann)
    assert header["annotations"]["classes"] == [[2, 0.7], [0, 0.2]]
    got = decode(msg).frame
    assert got is not None and got.annotations.classes == [(2, 0.7), (0, 0.2)]
    _, plain = encoded_header(Annotations(model="seg", boxes=[Box(0, 0, 1, 1, 0, 0.5)]))
    assert "classes" not in plain["annotations"]  # an older receiver sees what it always saw


@pytest.mark.parametrize("bad", [[[1]], [[1, 1.5]], [[-1, 0.2]], [[300, 0.2]], [[True, 0.2]], "x"])
def test_malformed_classes_are_refused(bad: object) -> None:
    msg, header = encoded_header(Annotations(model="cls", labels=["a"], classes=[(0, 0.9)]))
    header["annotations"]["classes"] = bad
    with pytest.raises(DecodeError, match="class"):
        decode([msg[0], json.dumps(header).encode(), *msg[2:]])


def test_top_k_softmax_and_probabilities() -> None:
    logits = np.array([[1.0, 3.0, 2.0, 3.0]], np.float32)
    got = top_k(logits, 3, "logits", 4)
    e = np.exp(logits[0] - 3.0)
    p = e / e.sum()
    assert [k for k, _ in got] == [1, 3, 2]  # ties: the lower index first
    assert [s for _, s in got] == pytest.approx([p[1], p[3], p[2]])
    probs = np.array([[0.1, 0.6, 0.3]], np.float32)
    assert top_k(probs, 5, "probabilities", 3) == [
        (1, pytest.approx(0.6)), (2, pytest.approx(0.3)), (0, pytest.approx(0.1))
    ]
    with pytest.raises(ValueError, match="must be 1 x 4"):
        top_k(probs, 1, "logits", 4)
    with pytest.raises(ValueError, match="output.scores must be logits or probabilities"):
        scores_kind({"scores": "softmax"}, "card")


def test_hud_lists_the_top_k() -> None:
    lines = [t for t, _ in hud_lines(HudData(seq=1, classes=(("benign", 0.71), ("normal", 0.2))))]
    assert lines[-2:] == ["1. benign 0.71", "2. normal 0.20"]


def test_results_summary_counts_boxes_and_top1_by_name() -> None:
    stats = StageStats("render", "render", FakeClock())
    labels = ["grasper", "hook"]
    count_results(stats, Annotations(labels=labels, boxes=[Box(0, 0, 1, 1, 1, 0.9), Box(0, 0, 1, 1, 0, 0.8)]))
    count_results(stats, Annotations(labels=labels, boxes=[Box(0, 0, 1, 1, 1, 0.9)]))
    count_results(stats, Annotations(labels=labels))  # nothing found: not counted
    count_results(stats, Annotations(labels=labels, classes=[(1, 0.6), (0, 0.4)]))
    section = results_summary([Counter(stats.counters)], stats.info["result_labels"])
    assert section == {"frames_with_boxes": 2, "boxes": {"grasper": 1, "hook": 2}, "top1": {"hook": 1}}
    assert format_results(section) == [
        "detections: 3 boxes on 2 frames (grasper 1, hook 2)",
        "classification top-1: hook 1",
    ]


def test_classifier_alone_and_after_a_denoiser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`model add` of a probabilities classifier: its card says so, and top-k comes out of the
    pipeline alone and at the end of a chain."""
    from engines.api import EngineSpec
    from engines.model_add import add_model
    from engines.pipeline import load_pipeline

    from .test_detection import export_fixed

    monkeypatch.setenv("MEDSTREAM_MODELS", str(tmp_path / "models"))
    probs = np.array([[0.2, 0.5, 0.3]], np.float32)
    r = add_model(str(export_fixed(tmp_path, {"probs": probs}, "cls.onnx")), name="cls", labels="a,b,c")
    assert (r.card["task"], r.card["output"]["scores"]) == ("classification", "probabilities")
    image = np.full((40, 50), 90, np.uint8)
    for model in ("cls", "classical-median+cls"):
        pipe = load_pipeline(EngineSpec(model=model, backend="auto", top_k=2))
        try:
            result = pipe(image, "gray8")
        finally:
            pipe.close()
        assert pipe.task == "classification" and pipe.labels == ["a", "b", "c"]
        assert result.classes == [(1, pytest.approx(0.5)), (2, pytest.approx(0.3))], model


def test_legend_lists_every_detector_label_and_none_for_a_classifier() -> None:
    from stream.render.explain import ModelExplainer

    explain = ModelExplainer()
    det = frame(Annotations(labels=["grasper", "hook"], boxes=[Box(0, 0, 2, 2, 0, 0.9)]))
    explain.note(det)
    assert [e["name"] for e in explain.live()["labels"]] == ["grasper", "hook"]  # class 0 too
    explain.note(frame(Annotations(labels=["a", "b"], classes=[(1, 0.8)])))
    assert explain.live()["labels"] == []
    seg = frame(Annotations(labels=["background", "lesion"]))
    seg.parts["mask"] = np.zeros((4, 6), np.uint8)
    explain.note(seg)
    assert [e["name"] for e in explain.live()["labels"]] == ["lesion"]


def test_detection_colours_match_between_boxes_and_legend_and_are_not_black() -> None:
    from stream.render.color import DETECTION_PALETTE
    from stream.render.explain import ModelExplainer

    explain = ModelExplainer()
    explain.note(frame(Annotations(labels=["grasper", "hook"], boxes=[Box(0, 0, 2, 2, 0, 0.9)])))
    want = [f"#{r:02x}{g:02x}{b:02x}" for b, g, r in DETECTION_PALETTE[:2]]
    assert [e["color"] for e in explain.live()["labels"]] == want
    assert "#000000" not in want
