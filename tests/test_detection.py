"""Detection postprocess: letterbox, decoding each layout, threshold, class-aware NMS, boxes in
image pixels; and a hand-weighted YOLOv8-style model through `model add` and a pipeline."""

from __future__ import annotations

import json
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
    boxes = detect({"out": yolo8_tensor()}, decoder("yolo_4+C_N"), DetectionSettings(), lb)
    assert [(b.label, round(b.score, 2)) for b in boxes] == [(0, 0.9), (1, 0.7), (1, 0.6)]
    a = boxes[0]
    assert [a.x0, a.y0, a.x1, a.y1] == [24.0, 28.0, 40.0, 36.0]
    # a stricter IoU threshold than A/B's overlap keeps B too; a lower threshold keeps D
    loose = detect(
        {"out": yolo8_tensor()},
        decoder("yolo_4+C_N"),
        DetectionSettings(conf_threshold=0.05, iou_threshold=0.95),
        lb,
    )
    assert sorted(round(b.score, 2) for b in loose) == [0.1, 0.6, 0.7, 0.8, 0.9]
    top2 = detect({"out": yolo8_tensor()}, decoder("yolo_4+C_N"), DetectionSettings(max_boxes=2), lb)
    assert [round(b.score, 2) for b in top2] == [0.9, 0.7]


def test_select_without_nms_keeps_the_best_above_threshold() -> None:
    c = Candidates(
        np.zeros((4, 4), np.float32),
        np.array([0.3, 0.9, 0.2, 0.5], np.float32),
        np.zeros(4, np.int64),
    )
    assert select(c, DetectionSettings(conf_threshold=0.25, max_boxes=2), nms=False).tolist() == [1, 3]


def test_every_layout_decodes_to_the_same_boxes() -> None:
    """The candidates written in each layout give the same kept boxes."""
    lb = Letterbox(SIZE, SIZE, 1.0, 1.0, 0, 0)
    want = detect({"out": yolo8_tensor()}, decoder("yolo_4+C_N"), DetectionSettings(), lb)
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
        (decoder("nms_K_7"), {"out": k7}),
        (
            decoder("nms_split", {"boxes": "b", "scores": "s", "labels": "l", "num": "n"}),
            {"b": xyxy[kept + [1]][None], "s": score[kept + [1]][None], "l": cls[kept + [1]][None],
             "n": np.array([[3]], np.int64)},
        ),
    ]
    for dec, outs in cases:
        got = detect(outs, dec, DetectionSettings(), lb)
        assert len(got) == len(want), dec.layout
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
