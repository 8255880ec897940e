"""Detection postprocess: letterbox, decoding each layout, threshold, class-aware NMS, boxes in
image pixels; and a hand-weighted YOLOv8-style model through `model add` and a pipeline."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from engines.api import Box, EngineSpec
from engines.detection import (
    Candidates,
    DetectionDecoder,
    DetectionSettings,
    detect,
    select,
)
from engines.letterbox import Letterbox, letterbox

SIZE = 64  # model input, square
LABELS = ("grasper", "hook", "clipper")  # 3: a 1 x N x 7 head would read as NMS rows
# candidates in model-input pixels: (cx, cy, w, h, class, score)
CANDIDATES = [
    (32, 32, 16, 8, 0, 0.90),  # A: kept
    (33, 32, 16, 8, 0, 0.80),  # B: overlaps A, same class: suppressed by NMS
    (32, 32, 16, 8, 1, 0.70),  # C: on A, other class: kept
    (10, 50, 6, 6, 0, 0.10),  # D: below the threshold
    (52, 20, 8, 8, 1, 0.60),  # E: alone: kept
]


def yolo8_tensor() -> np.ndarray:
    """1 x (4+C) x N: the candidates, one column each; the other class scores are 0.01."""
    out = np.full((1, 4 + len(LABELS), len(CANDIDATES)), 0.01, np.float32)
    for j, (cx, cy, w, h, k, s) in enumerate(CANDIDATES):
        out[0, :4, j] = (cx, cy, w, h)
        out[0, 4 + k, j] = s
    return out


def image_box(cx: float, cy: float, w: float, h: float, lb: Letterbox) -> list[float]:
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    return [
        (x0 - lb.left) / lb.scale_x,
        (y0 - lb.top) / lb.scale_y,
        (x1 - lb.left) / lb.scale_x,
        (y1 - lb.top) / lb.scale_y,
    ]


def test_letterbox_keeps_the_aspect_and_pads() -> None:
    image = np.full((60, 120), 200, np.uint8)  # twice as wide as high
    canvas, lb = letterbox(image, SIZE, SIZE, pad_value=114)
    assert canvas.shape == (SIZE, SIZE) and canvas.dtype == np.uint8
    assert (lb.scale_x, lb.scale_y, lb.left, lb.top) == (64 / 120, 32 / 60, 0, 16)
    assert (canvas[:16] == 114).all() and (canvas[48:] == 114).all()
    assert (canvas[16:48] == 200).all()
    rgb = np.zeros((100, 50, 3), np.uint8)
    canvas3, lb3 = letterbox(rgb, SIZE, SIZE, pad_value=7)
    assert canvas3.shape == (SIZE, SIZE, 3) and (lb3.left, lb3.top) == (16, 0)
    assert (canvas3[:, :16] == 7).all() and (canvas3[:, 16:48] == 0).all()


def test_letterbox_round_trip_and_clipping() -> None:
    _, lb = letterbox(np.zeros((480, 640), np.uint8), 320, 320)
    boxes = np.array([[10.5, 20.0, 300.0, 470.0], [0.0, 0.0, 640.0, 480.0]], np.float32)
    back = lb.to_image(lb.to_model(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    # a box reaching into the padding is clipped to the image
    outside = lb.to_image(np.array([[-5.0, 0.0, 400.0, 30.0]], np.float32))
    assert outside.tolist() == [[0.0, 0.0, 640.0, 0.0]]


def test_letterbox_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        letterbox(np.zeros((4, 4), np.float32), 8, 8)
    with pytest.raises(ValueError, match="pad value"):
        letterbox(np.zeros((4, 4), np.uint8), 8, 8, pad_value=300)


def decoder(layout: str, outputs: dict[str, str] | None = None, classes: int = 3) -> DetectionDecoder:
    out = {"layout": layout, "outputs": outputs or {"output": "out"}}
    return DetectionDecoder.from_card(out, classes, SIZE, SIZE, "test")


def test_nms_merges_same_class_keeps_other_class_and_drops_low_scores() -> None:
    lb = Letterbox(SIZE, SIZE, 1.0, 1.0, 0, 0)
    boxes, cut = detect({"out": yolo8_tensor()}, decoder("yolo_4+C_N"), DetectionSettings(), lb)
    assert [(b.label, round(b.score, 2)) for b in boxes] == [(0, 0.9), (1, 0.7), (1, 0.6)]
    assert cut == 0
    a = boxes[0]
    assert [a.x0, a.y0, a.x1, a.y1] == [24.0, 28.0, 40.0, 36.0]
    # a stricter IoU threshold than A/B's overlap keeps B too; a lower threshold keeps D
    loose, _ = detect(
        {"out": yolo8_tensor()},
        decoder("yolo_4+C_N"),
        DetectionSettings(conf_threshold=0.05, iou_threshold=0.95),
        lb,
    )
    assert sorted(round(b.score, 2) for b in loose) == [0.1, 0.6, 0.7, 0.8, 0.9]
    top2, cut = detect({"out": yolo8_tensor()}, decoder("yolo_4+C_N"), DetectionSettings(max_boxes=2), lb)
    assert [round(b.score, 2) for b in top2] == [0.9, 0.7] and cut == 1  # E (0.6) cut, counted


def test_select_without_nms_keeps_the_best_above_threshold() -> None:
    c = Candidates(
        np.zeros((4, 4), np.float32),
        np.array([0.3, 0.9, 0.2, 0.5], np.float32),
        np.zeros(4, np.int64),
    )
    idx, cut = select(c, DetectionSettings(conf_threshold=0.25, max_boxes=2), nms=False)
    assert idx.tolist() == [1, 3] and cut == 1  # 0.3 passed the threshold: cut by max_boxes


def test_every_layout_decodes_to_the_same_boxes() -> None:
    """The candidates written in each layout give the same kept boxes."""
    lb = Letterbox(SIZE, SIZE, 1.0, 1.0, 0, 0)
    want, _ = detect({"out": yolo8_tensor()}, decoder("yolo_4+C_N"), DetectionSettings(), lb)
    y8 = yolo8_tensor()[0].T  # N x (4+C)
    xyxy = np.stack(
        [y8[:, 0] - y8[:, 2] / 2, y8[:, 1] - y8[:, 3] / 2, y8[:, 0] + y8[:, 2] / 2, y8[:, 1] + y8[:, 3] / 2],
        1,
    )
    y5 = np.concatenate([y8[:, :4], np.full((len(y8), 1), 1.0, np.float32), y8[:, 4:]], 1)[None]
    ssd = {"b": (xyxy / SIZE)[None], "s": y8[None, :, 4:]}
    kept = [0, 2, 4]  # what NMS keeps: a graph with NMS in it outputs these rows
    cls = np.argmax(y8[:, 4:], 1).astype(np.float32)
    score = y8[:, 4:].max(1)
    k6 = np.concatenate([xyxy, score[:, None], cls[:, None]], 1)[kept][None]
    k7 = np.concatenate([np.zeros((len(y8), 1)), xyxy, cls[:, None], score[:, None]], 1)[kept]
    k7 = np.concatenate([k7, [[1, 0, 0, 9, 9, 0, 0.99]]]).astype(np.float32)  # batch 1: ignored
    cases = [
        (decoder("yolo_N_5+C"), {"out": y5}),
        (
            DetectionDecoder.from_card(
                {"layout": "ssd_boxes_scores", "outputs": {"boxes": "b", "scores": "s"}, "box_units": "normalized"},
                3, SIZE, SIZE, "test",
            ),
            ssd,
        ),
        (decoder("nms_K_6"), {"out": k6}),
        (decoder("nms_K_6"), {"out": k6[0]}),  # K x 6: no batch axis
        (decoder("nms_K_7"), {"out": k7}),
        (decoder("nms_K_7"), {"out": k7[None]}),  # 1 x K x 7: with one
        (
            decoder("nms_split", {"boxes": "b", "scores": "s", "labels": "l", "num": "n"}),
            {"b": xyxy[kept + [1]][None], "s": score[kept + [1]][None], "l": cls[kept + [1]][None],
             "n": np.array([[3]], np.int64)},
        ),
    ]
    for dec, outs in cases:
        got, cut = detect(outs, dec, DetectionSettings(), lb)
        assert len(got) == len(want) and cut == 0, dec.layout
        for g, w in zip(got, want, strict=True):
            assert (g.label, round(g.score, 4)) == (w.label, round(w.score, 4)), dec.layout
            np.testing.assert_allclose([g.x0, g.y0, g.x1, g.y1], [w.x0, w.y0, w.x1, w.y1], atol=1e-3)


def test_bad_cards_and_outputs_are_named() -> None:
    with pytest.raises(ValueError, match="output.layout must be one of"):
        decoder("yolo_maybe")
    with pytest.raises(ValueError, match="must name the ssd_boxes_scores outputs"):
        decoder("ssd_boxes_scores", {"boxes": "b"})
    with pytest.raises(ValueError, match="yolo_4\\+C_N output must be 1 x 7 x N"):
        decoder("yolo_4+C_N").decode({"out": np.zeros((1, 9, 10), np.float32)})
    k6 = np.array([[[0, 0, 5, 5, 0.9, 4]]], np.float32)
    with pytest.raises(ValueError, match="class 4, but its card has 3 labels"):
        detect({"out": k6}, decoder("nms_K_6"), DetectionSettings(), Letterbox(8, 8, 1, 1, 0, 0))


# --- max_boxes: what it cuts is counted (detect, the infer stage, the run report)


def crowd(n: int, classes: int = 3) -> tuple[np.ndarray, list[float]]:
    """A YOLOv8 output (1 x (4+C) x 2n) with `n` separate boxes scoring 0.30..0.95, each with a
    near twin that NMS merges into it, and one box below the default threshold; the scores of
    the n boxes, best first."""
    scores = np.linspace(0.95, 0.30, n).astype(np.float32)
    out = np.full((1, 4 + classes, 2 * n + 1), 0.01, np.float32)
    for i, sc in enumerate(scores):
        cx, cy, k = 4.0 + 8 * (i % 7), 4.0 + 8 * (i // 7), i % classes
        out[0, :4, 2 * i] = (cx, cy, 6, 6)
        out[0, 4 + k, 2 * i] = sc
        out[0, :4, 2 * i + 1] = (cx + 0.5, cy, 6, 6)  # the twin: IoU ~0.85, same class
        out[0, 4 + k, 2 * i + 1] = sc - 0.01
    out[0, :4, -1] = (60, 60, 4, 4)
    out[0, 4, -1] = 0.1  # below 0.25: not a cut box
    return out, [float(x) for x in scores]


def test_boxes_beyond_max_boxes_are_counted_not_dropped_silently() -> None:
    lb = Letterbox(SIZE, SIZE, 1.0, 1.0, 0, 0)
    out, scores = crowd(20)
    boxes, cut = detect({"out": out}, decoder("yolo_4+C_N"), DetectionSettings(max_boxes=100), lb)
    assert len(boxes) == 20 and cut == 0  # the twins are merged by NMS, not cut
    for limit in (1, 7, 19):
        boxes, cut = detect({"out": out}, decoder("yolo_4+C_N"), DetectionSettings(max_boxes=limit), lb)
        assert [round(b.score, 4) for b in boxes] == [round(x, 4) for x in scores[:limit]]
        assert cut == 20 - limit
    # NMS in the graph: the rows NMS left, more than max_boxes of them
    t = out[0].T[0::2][:20]  # the 20 boxes, no twins
    k6 = np.concatenate(
        [t[:, :2] - t[:, 2:4] / 2, t[:, :2] + t[:, 2:4] / 2, t[:, 4:].max(1, keepdims=True),
         t[:, 4:].argmax(1)[:, None]], 1
    )[None]
    boxes, cut = detect({"out": k6}, decoder("nms_K_6"), DetectionSettings(max_boxes=5), lb)
    assert len(boxes) == 5 and cut == 15
    boxes, cut = detect({"out": k6}, decoder("nms_K_6"), DetectionSettings(max_boxes=5, conf_threshold=0.9), lb)
    assert cut == 0 and len(boxes) == sum(x >= 0.9 for x in scores)  # under the limit: none cut


def infer_operator(pipeline: object) -> tuple[object, object]:
    """An infer stage operator (and its runtime) for `pipeline`, set up with in-memory ports."""
    from stream.clock import FakeClock
    from stream.config import load_config
    from stream.stages.base import StageRuntime
    from stream.stages.infer import InferOperator
    from stream.stages.loop import Ports

    from .test_stage_loop import MemOutbox

    cfg = load_config(
        {
            "name": "t",
            "links": {"in": {"endpoint": "ipc:///tmp/unused-in"}, "out": {"endpoint": "ipc:///tmp/unused-out"}},
            "stages": [
                {"id": "infer", "kind": "infer", "input": "in", "output": "out",
                 "engine": {"model": "det", "max_boxes": 3}},
                {"id": "render", "kind": "render", "input": "out"},
            ],
        }
    )
    spec = cfg.stage("infer")
    rt = StageRuntime(cfg, spec, clock=FakeClock(), stats_endpoint="")
    op = InferOperator(rt, spec, pipeline)  # type: ignore[arg-type]
    op.setup(Ports(lambda *_: None, lambda _: MemOutbox()))  # type: ignore[arg-type, return-value]
    return op, rt


def test_the_infer_stage_counts_boxes_cut_per_stream_and_logs_once() -> None:
    from engines import InferenceResult
    from stream.frame import Frame

    cuts = iter([0, 4, 2, 5])  # per model run, as the detector says

    class Detector:
        model_id, labels, backend, device, precision = "det", list(LABELS), "fake", "cpu", "fp32"
        confidence = True

        def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
            return InferenceResult(mask=None, boxes=[Box(0, 0, 4, 4, 0, 0.9)] * 3, boxes_cut=next(cuts))

        def close(self) -> None:
            pass

    op, rt = infer_operator(Detector())
    image = np.zeros((16, 16), np.uint8)
    logger = rt.log  # type: ignore[attr-defined]
    records: list[logging.LogRecord] = []
    catcher = logging.Handler(logging.WARNING)  # on the stage's own logger: each record once
    catcher.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(catcher)
    try:
        for stream, seq in (("a", 0), ("a", 1), ("b", 0), ("b", 1)):
            out = op.process(Frame(stream, seq, 10**9 * (seq + 1), 10**12, image), 0, False)  # type: ignore[attr-defined]
            assert isinstance(out, Frame) and len(out.annotations.boxes) == 3
    finally:
        logger.removeHandler(catcher)
        op.close()  # type: ignore[attr-defined]
        rt.close()  # type: ignore[attr-defined]
    stats = rt.stats  # type: ignore[attr-defined]
    assert stats.counters["boxes_cut"] == 11
    assert stats.streams["a"].counters["boxes_cut"] == 4 and stats.streams["b"].counters["boxes_cut"] == 7
    warned = [r.getMessage() for r in records if "max_boxes" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "4 boxes more than max_boxes 3 on frame 1 of stream a" in warned[0]
    assert "engine.max_boxes" in warned[0]


def test_the_run_report_shows_boxes_cut_only_when_some_were() -> None:
    import yaml

    from stream.config import load_config
    from stream.report import build_report, format_report

    cfg = load_config(yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "ultrasound_seg.yaml").read_text()))

    def snap(stage: str, pid: int, counters: dict, info: dict | None = None) -> dict:
        return {"stage": stage, "pid": pid, "started_ns": pid, "final": False, "counters": counters,
                "drops": {}, "hists": {}, "info": info or {}, "first_out_ns": None, "last_out_ns": None}

    render = snap("render", 4, {"out": 10, "result_frames_boxes": 10, "result_boxes:0": 30},
                  {"result_labels": ["tool"]})
    base = [snap("grab", 1, {"captured": 10, "out": 10}, {"stream": "grab", "epoch": 1}), render]
    infer_runs = [snap("infer", 2, {"out": 6, "boxes_cut": 5}), snap("infer", 3, {"out": 4, "boxes_cut": 2})]
    report = build_report(cfg, base + infer_runs, 1.0, {"infer": 1}, "test")
    assert report["results"]["boxes_cut"] == 7  # both incarnations of the infer stage
    line = "detections: 30 boxes on 10 frames (tool 30); 7 boxes cut by engine.max_boxes"
    assert line in format_report(report)
    none = build_report(cfg, [*base, snap("infer", 2, {"out": 10})], 1.0, {}, "test")
    assert "boxes_cut" not in none["results"] and "cut by" not in format_report(none)


# --- a hand-weighted YOLOv8-style model, exported to ONNX, through model add and a pipeline


def export_fixed(tmp_path: Path, outputs: dict[str, np.ndarray], name: str = "yolo.onnx") -> Path:
    """An ONNX model whose outputs (by name) are the given arrays whatever the 3 x SIZE x SIZE
    image: a network with its weights set by hand."""
    torch = pytest.importorskip("torch")

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.outs = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a))) for a in outputs.values()]
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            zero = 0.0 * x.mean()
            return tuple(o + zero for o in self.outs)

    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Fixed().eval(),
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=list(outputs),
        )
    return path


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv("MEDSTREAM_MODELS", str(folder))
    return folder


def test_yolo8_model_add_then_pipeline_gives_image_pixel_boxes(tmp_path: Path, user_dir: Path) -> None:
    from engines.model_add import add_model
    from engines.names import check_model
    from engines.pipeline import load_pipeline

    path = export_fixed(tmp_path, {"output0": yolo8_tensor()})
    r = add_model(str(path), name="yolo", labels=",".join(LABELS))
    assert r.card["output"]["layout"] == "yolo_4+C_N"
    assert (r.card["input"]["fit"], r.card["input"]["pad_value"]) == ("letterbox", 114)
    check_model("yolo", "auto")  # runnable now
    pipe = load_pipeline(EngineSpec(model="yolo", backend="onnxruntime"))
    try:
        assert (pipe.task, pipe.labels) == ("detection", list(LABELS))
        image = np.zeros((120, 240), np.uint8)  # 2:1: letterboxed into 64 x 32 at top 16
        result = pipe(image, "gray8")
    finally:
        pipe.close()
    _, lb = letterbox(image, SIZE, SIZE)
    want = [image_box(*CANDIDATES[i][:4], lb) for i in (0, 2, 4)]
    assert [b.label for b in result.boxes] == [0, 1, 1]
    np.testing.assert_allclose([[b.x0, b.y0, b.x1, b.y1] for b in result.boxes], want, atol=1e-3)
    a = result.boxes[0]  # (24, 28, 40, 36) in the input; x / (64 / 240), (y - 16) / (32 / 120)
    assert [a.x0, a.y0, a.x1, a.y1, a.score] == pytest.approx([90.0, 45.0, 150.0, 75.0, 0.9], abs=1e-4)
    assert isinstance(a, Box)
    assert result.mask is None and set(result.timings_ms) >= {"preprocess", "postprocess"}
    assert result.boxes_cut == 0
    two = load_pipeline(EngineSpec(model="yolo", backend="onnxruntime", max_boxes=2))
    try:
        cut = two(image, "gray8")
    finally:
        two.close()
    assert [b.score for b in cut.boxes] == [b.score for b in result.boxes[:2]] and cut.boxes_cut == 1


def run_user_model(name: str, image: np.ndarray) -> list[Box]:
    from engines.pipeline import load_pipeline

    pipe = load_pipeline(EngineSpec(model=name, backend="onnxruntime"))
    try:
        return pipe(image, "gray8").boxes
    finally:
        pipe.close()


def test_yolo5_and_ssd_models_give_the_same_boxes(tmp_path: Path, user_dir: Path) -> None:
    """The YOLOv8 model's candidates written as a YOLOv5 head and as an SSD pair (boxes in
    0..1, since SSD exports usually say so: the card's output.box_units)."""
    from engines.model_add import add_model

    y8 = yolo8_tensor()[0].T  # N x (4+C)
    y5 = np.concatenate([y8[:, :4], np.ones((len(y8), 1), np.float32), y8[:, 4:]], 1)[None]
    labels = ",".join(LABELS)
    add_model(str(export_fixed(tmp_path, {"output0": yolo8_tensor()}, "y8.onnx")), name="y8", labels=labels)
    r5 = add_model(str(export_fixed(tmp_path, {"output": y5}, "y5.onnx")), name="y5", labels=labels)
    assert r5.card["output"]["layout"] == "yolo_N_5+C"
    xyxy = np.concatenate([y8[:, :2] - y8[:, 2:4] / 2, y8[:, :2] + y8[:, 2:4] / 2], 1) / SIZE
    ssd = export_fixed(tmp_path, {"boxes": xyxy[None], "scores": y8[None, :, 4:]}, "ssd.onnx")
    rs = add_model(str(ssd), name="ssd", labels=labels)
    assert rs.card["output"]["layout"] == "ssd_boxes_scores"
    card_path = user_dir / "ssd" / "card.json"
    card = json.loads(card_path.read_text())
    card["output"]["box_units"] = "normalized"
    card_path.write_text(json.dumps(card))
    image = np.zeros((90, 60), np.uint8)  # taller than wide: padded left and right
    want = run_user_model("y8", image)
    assert len(want) == 3 and all(0 <= b.x0 < b.x1 <= 60 and 0 <= b.y0 < b.y1 <= 90 for b in want)
    for name in ("y5", "ssd"):
        got = run_user_model(name, image)
        assert [(b.label, round(b.score, 4)) for b in got] == [(b.label, round(b.score, 4)) for b in want]
        np.testing.assert_allclose(
            [[b.x0, b.y0, b.x1, b.y1] for b in got], [[b.x0, b.y0, b.x1, b.y1] for b in want], atol=1e-3
        )


def test_torchscript_ssd_pair_on_the_pytorch_backend(tmp_path: Path, user_dir: Path) -> None:
    """A detection card naming a TorchScript file: the pytorch backend returns the module's
    tuple under the card's output names and gives the ONNX Runtime boxes."""
    torch = pytest.importorskip("torch")
    from engines.model_add import add_model
    from engines.pipeline import load_pipeline

    y8 = yolo8_tensor()[0].T
    xyxy = np.concatenate([y8[:, :2] - y8[:, 2:4] / 2, y8[:, :2] + y8[:, 2:4] / 2], 1)
    outputs = {"boxes": xyxy[None], "scores": y8[None, :, 4:]}
    add_model(str(export_fixed(tmp_path, outputs, "ssd.onnx")), name="ssd", labels=",".join(LABELS))

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = torch.nn.Parameter(torch.from_numpy(outputs["boxes"]))
            self.s = torch.nn.Parameter(torch.from_numpy(outputs["scores"]))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            zero = 0.0 * x.mean()
            return self.b + zero, self.s + zero

    torch.jit.script(Pair().eval()).save(str(user_dir / "ssd" / "model.pt"))
    card_path = user_dir / "ssd" / "card.json"
    card = json.loads(card_path.read_text())
    card["torchscript"] = "model.pt"
    card_path.write_text(json.dumps(card))
    image = np.zeros((50, 100), np.uint8)
    want = run_user_model("ssd", image)
    pipe = load_pipeline(EngineSpec(model="ssd", backend="pytorch"))
    try:
        got = pipe(image, "gray8").boxes
    finally:
        pipe.close()
    assert pipe.backend == "pytorch" and len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label
        assert [g.x0, g.y0, g.x1, g.y1, g.score] == pytest.approx([w.x0, w.y0, w.x1, w.y1, w.score], abs=1e-4)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("conf_threshold", 1.5, "engine.conf_threshold: expected a value in \\[0.0, 1.0\\], got 1.5"),
        ("iou_threshold", "high", "engine.iou_threshold: expected a number"),
        ("max_boxes", 0, "engine.max_boxes: expected a value in \\[1, 4096\\]"),
        ("top_k", 2.5, "engine.top_k: expected an integer"),
    ],
)
def test_detection_and_classification_keys_are_checked(key: str, value: object, message: str) -> None:
    import yaml

    from stream.config import load_config
    from stream.spec import ConfigError

    data = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "ultrasound_seg.yaml").read_text())
    data["stages"][1]["engine"][key] = value
    with pytest.raises(ConfigError, match=message):
        load_config(data)


@pytest.mark.gpu
@pytest.mark.skipif(
    os.environ.get("MEDSTREAM_GPU_TESTS") != "1",
    reason="GPU test: set MEDSTREAM_GPU_TESTS=1 on an NVIDIA host with the gpu extra "
    "(pip install -e '.[gpu,test]'; MEDSTREAM_GPU_TESTS=1 pytest -m gpu tests/test_detection.py)",
)
def test_tensorrt_detection_matches_onnxruntime(tmp_path: Path, user_dir: Path) -> None:
    """The TensorRT engine (CUDA preprocessing of the letterboxed frame, host postprocess) gives
    the ONNX Runtime boxes."""
    from engines.model_add import add_model
    from engines.pipeline import load_pipeline

    add_model(str(export_fixed(tmp_path, {"output0": yolo8_tensor()})), name="yolo", labels=",".join(LABELS))
    image = np.zeros((120, 240), np.uint8)
    want = run_user_model("yolo", image)
    trt = load_pipeline(EngineSpec(model="yolo", backend="tensorrt", engine_cache=str(tmp_path / "engines")))
    try:
        got = trt(image, "gray8").boxes
    finally:
        trt.close()
    assert trt.backend == "tensorrt" and len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label
        assert [g.x0, g.y0, g.x1, g.y1, g.score] == pytest.approx([w.x0, w.y0, w.x1, w.y1, w.score], abs=1e-2)


def test_a_card_whose_labels_do_not_fit_the_head_is_refused_at_load(tmp_path: Path, user_dir: Path) -> None:
    from engines.model_add import add_model
    from engines.pipeline import load_pipeline
    from engines.registry import ModelError

    add_model(str(export_fixed(tmp_path, {"output0": yolo8_tensor()})), name="yolo", labels=",".join(LABELS))
    card_path = user_dir / "yolo" / "card.json"
    card = json.loads(card_path.read_text())
    card["labels"] = ["one", "two"]  # edited by hand: the head has 3 classes
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="\\[1, 7, 5\\] is not yolo_4\\+C_N with 2 labels"):
        load_pipeline(EngineSpec(model="yolo", backend="onnxruntime"))
