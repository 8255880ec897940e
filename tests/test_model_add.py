"""`medstream model add` with third-party-shaped models exported here by torch (tiny networks):
YOLO heads, NMS and SSD outputs, MONAI-style and sigmoid segmenters, a classifier, a denoiser."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
nn = torch.nn

from engines.model_add import Finding, Tensor, add_model, read_layout  # noqa: E402
from engines.registry import ModelError, list_user_models, resolve_model  # noqa: E402
from stream.cli import main  # noqa: E402

from .pipelines import light_config, medstream  # noqa: E402

SIZE = 32


class Yolo8(nn.Module):
    """[1, 4+C, N]: boxes then class scores, one column per anchor."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4 + classes, 3, stride=4, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2)  # 1 x (4+C) x 64


class Yolo5(Yolo8):
    """[1, N, 5+C]: box, objectness, class scores per row."""

    def __init__(self, classes: int = 3) -> None:
        nn.Module.__init__(self)
        self.conv = nn.Conv2d(3, 5 + classes, 3, stride=4, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).transpose(1, 2)  # 1 x 64 x (5+C)


class Nms6(Yolo8):
    """[1, K, 6] rows after NMS: x1, y1, x2, y2, score, class (K = 16 kept boxes)."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.conv = nn.Conv2d(3, 6, 3, stride=8, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).transpose(1, 2)


class Ssd(nn.Module):
    """An SSD pair: boxes 1 x N x 4 and scores 1 x N x C."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.box = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.cls = nn.Conv2d(3, classes, 3, stride=4, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.box(x).flatten(2).transpose(1, 2), self.cls(x).flatten(2).transpose(1, 2)


class Seg(nn.Module):
    """NCHW logits at the input's size (MONAI-style: out_channels classes), optional sigmoid."""

    def __init__(self, in_ch: int, out_ch: int, sigmoid: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.sigmoid(y) if self.sigmoid else y


class Classifier(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))  # 1 x C


class Mystery(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, 3, 2, SIZE * SIZE // 2, 1)  # 5-D: no task reads it


def export(
    model: nn.Module,
    path: Path,
    channels: int = 3,
    outputs: tuple[str, ...] = ("output",),
    dynamic: bool = False,
) -> Path:
    torch.manual_seed(0)
    model.eval()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, channels, SIZE, SIZE),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=list(outputs),
            dynamic_axes=axes,
        )
    return path


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv("MEDSTREAM_MODELS", str(folder))
    return folder


@pytest.mark.parametrize(
    ("model", "outputs", "labels", "layout", "classes"),
    [
        (Yolo8(3), ("output0",), "grasper,hook,clipper", "yolo_4+C_N", 3),
        (Yolo5(3), ("output",), None, "yolo_N_5+C", 3),
        (Nms6(), ("detections",), "tool,hook,clip", "nms_K_6", 0),  # 3 labels: not a YOLOv5 head
        (Ssd(5), ("boxes", "scores"), None, "ssd_boxes_scores", 5),
    ],
)
def test_detection_layouts(
    model: nn.Module,
    outputs: tuple[str, ...],
    labels: str | None,
    layout: str,
    classes: int,
    tmp_path: Path,
    user_dir: Path,
) -> None:
    path = export(model, tmp_path / "det.onnx", outputs=outputs)
    r = add_model(str(path), name="det", labels=labels)
    card = json.loads((user_dir / "det" / "card.json").read_text())
    assert card["task"] == "detection"
    assert card["output"]["layout"] == layout
    assert set(card["output"]["outputs"].values()) == set(outputs)
    want = labels.split(",") if labels else [f"class{i}" for i in range(classes)]
    assert card["labels"] == want
    assert r.finding.classes == classes
    assert (user_dir / "det" / "model.onnx").read_bytes() == path.read_bytes()
    assert card["input"]["channels"] == "rgb" and card["input"]["height"] == SIZE
    assert card["intended_use"].startswith("unknown") and card["notice"]
    # listed, resolvable and runnable (the preflight reads the card's layout)
    assert list_user_models() == ["det"]
    assert resolve_model("det").card.task == "detection"
    from engines.names import check_model

    check_model("det", "auto")


def test_nms_rows_need_labels(tmp_path: Path, user_dir: Path) -> None:
    path = export(Nms6(), tmp_path / "nms.onnx")
    with pytest.raises(ModelError, match="does not say how many classes: give --labels"):
        add_model(str(path), name="nms", layout="nms_K_6")
    assert not (user_dir / "nms").exists()


def test_yolo_labels_must_match_the_head(tmp_path: Path, user_dir: Path) -> None:
    path = export(Yolo8(3), tmp_path / "y.onnx")
    with pytest.raises(ModelError, match="neither 1 x \\(4\\+C\\) x N nor"):
        add_model(str(path), name="y", labels="a,b")


def test_classifier(tmp_path: Path, user_dir: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("normal\nbenign\nmalignant\nartefact\n")
    path = export(Classifier(4), tmp_path / "cls.onnx", outputs=("logits",), dynamic=True)
    r = add_model(str(path), labels_file=str(labels), mean=[0.5], std=[0.25], size=48)
    assert r.name == "cls"
    card = r.card
    assert card["task"] == "classification"
    assert card["labels"] == ["normal", "benign", "malignant", "artefact"]
    assert card["output"]["layout"] == "N_C_logits"
    assert (card["input"]["height"], card["input"]["width"]) == (48, 48)  # dynamic: --size
    assert card["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3, "applied_to": "pixel / 255"}
    assert any("dynamic" in n for n in r.notes)


def test_segmenters_and_denoiser_cards(tmp_path: Path, user_dir: Path) -> None:
    two = add_model(str(export(Seg(1, 2), tmp_path / "monai.onnx", channels=1)))
    assert (two.card["task"], two.card["labels"]) == ("segmentation", ["background", "class1"])
    assert two.card["output"]["layout"] == "NCHW_classes"
    sig = add_model(
        str(export(Seg(3, 1, sigmoid=True), tmp_path / "sig.onnx", outputs=("probs",))),
        labels="background,polyp",
    )
    assert sig.card["output"]["sigmoid"] == "probabilities"
    assert sig.card["labels"] == ["background", "polyp"]
    # a 1-channel output on a 1-channel input named neutrally: denoiser or segmenter? --task
    neutral = export(Seg(1, 1), tmp_path / "neutral.onnx", channels=1)
    with pytest.raises(ModelError, match="pass --task segmentation or --task denoising"):
        add_model(str(neutral))
    dn = add_model(str(neutral), name="dn", task="denoising")
    assert (dn.card["task"], dn.card["labels"], dn.card["output"]["layout"]) == (
        "denoising", [], "NCHW_image",
    )
    logit = add_model(str(neutral), name="logit", task="segmentation")
    assert logit.card["output"]["sigmoid"] == "logits"  # values outside [0, 1]
    assert list_user_models() == ["dn", "logit", "monai", "sig"]


def test_unreadable_layout_is_refused_in_one_line(
    tmp_path: Path, user_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = export(Mystery(), tmp_path / "odd.onnx", outputs=("weird",))
    assert main(["model", "add", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot read output 'weird' [1, 3, 2, {SIZE * SIZE // 2}, 1]" in err
    assert not (user_dir / "odd").exists()


def test_a_bundled_name_cannot_be_shadowed(tmp_path: Path, user_dir: Path) -> None:
    path = export(Seg(1, 4), tmp_path / "m.onnx", channels=1)
    with pytest.raises(ModelError, match="'us-seg' is bundled with medstream"):
        add_model(str(path), name="us-seg")
    add_model(str(path), name="mine")
    with pytest.raises(ModelError, match="exists .*--force"):
        add_model(str(path), name="mine")
    # a folder planted by hand under a bundled name is ignored: the bundled model wins
    (user_dir / "us-seg").mkdir()
    for f in ("model.onnx", "card.json"):
        (user_dir / "us-seg" / f).write_bytes((user_dir / "mine" / f).read_bytes())
    assert list_user_models() == ["mine"]
    assert resolve_model("us-seg").onnx_path.parent.parent.name == "models"
    assert resolve_model("us-seg").card.labels[1] == "anechoic"


@pytest.mark.parametrize("std", [[float("nan")], [0.0], [1.0, 1.0]])
def test_a_bad_mean_or_std_is_refused_before_anything_is_written(
    tmp_path: Path, user_dir: Path, std: list[float]
) -> None:
    """`--std nan` passed the `std > 0` check, wrote the model and then failed to read its own
    card back, leaving a model folder that blocked the next add ('exists: --force')."""
    path = export(Seg(1, 2), tmp_path / "m.onnx", channels=1)
    with pytest.raises(ModelError, match=r"--mean and --std need 1 value each, finite, std > 0"):
        add_model(str(path), std=std)
    assert not user_dir.exists() or not any(user_dir.iterdir())


def test_an_add_that_fails_at_the_end_leaves_the_old_model_and_nothing_else(
    tmp_path: Path, user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engines.model_add

    path = export(Seg(1, 2), tmp_path / "m.onnx", channels=1)
    first = add_model(str(path), name="mine")
    card = (user_dir / "mine" / "card.json").read_text()

    def unreadable(p: Path) -> None:
        raise ModelError(f"{p}: unreadable")

    monkeypatch.setattr(engines.model_add, "load_card", unreadable)
    with pytest.raises(ModelError, match="unreadable"):
        add_model(str(path), name="mine", force=True, labels="a,b")
    with pytest.raises(ModelError, match="unreadable"):
        add_model(str(path), name="other")
    assert sorted(p.name for p in user_dir.iterdir()) == ["mine"]  # no staging folder left
    assert (user_dir / "mine" / "card.json").read_text() == card and first.card["labels"] != ["a", "b"]
    assert list_user_models() == ["mine"]


def test_models_lists_user_models_and_survives_a_broken_card(
    tmp_path: Path, user_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = export(Classifier(3), tmp_path / "c.onnx")
    add_model(str(path), name="good", labels="a,b,c")
    add_model(str(path), name="bad", labels="a,b,c")
    (user_dir / "bad" / "card.json").write_text("{")
    assert main(["models"]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln}
    assert rows["good"].split()[1:4] == ["user", "classification", f"{SIZE}x{SIZE}"]
    assert rows["bad"].split()[1] == "user" and "unusable" in rows["bad"]
    assert rows["us-seg"].split()[1] == "bundled"


def test_read_layout_dynamic_rows_and_k7() -> None:
    k7 = read_layout([Tensor("dets", ("num", 7), (12, 7))], 3)
    assert (k7.task, k7.layout, k7.columns[0]) == ("detection", "nms_K_7", "batch")
    dynamic = [Tensor("out", (1, "k", 6), (1, 1500, 6))]
    with pytest.raises(ModelError, match="not guessed: pass --layout yolo_N_5\\+C or --layout nms_K_6"):
        read_layout(dynamic, 3)  # a 1-class YOLOv5 head exported with dynamic axes, or NMS rows
    dyn = read_layout(dynamic, 3, layout="nms_K_6")
    assert dyn.layout == "nms_K_6"  # however many rows came back
    raw = read_layout([Tensor("out", (1, 25200, 6), (1, 25200, 6))], 3)
    assert (raw.layout, raw.classes) == ("yolo_N_5+C", 1)  # too many rows for NMS output
    k6 = read_layout([Tensor("out", (1, 25200, 6), (1, 25200, 6))], 3, layout="nms_K_6")
    assert (k6.layout, k6.classes, k6.columns[4]) == ("nms_K_6", 0, "score")  # --layout: taken
    split = read_layout(
        [Tensor(n, s, s) for n, s in (("num_dets", (1, 1)), ("det_boxes", (1, 100, 4)),
                                      ("det_scores", (1, 100)), ("det_classes", (1, 100)))],
        3,
    )
    assert isinstance(split, Finding) and split.layout == "nms_split"
    with pytest.raises(ModelError, match="cannot read output 'x' \\[1, 7\\]"):
        read_layout([Tensor("x", (1, 7), (1, 7))], 3, task="detection")


@pytest.mark.parametrize(
    ("shape", "labels", "candidates"),
    [
        ((1, 64, 6), None, ("yolo_N_5+C", "nms_K_6")),  # a 1-class YOLOv5 head or 64 NMS rows
        ((1, 64, 6), 1, ("yolo_N_5+C", "nms_K_6")),  # one label fits both
        ((1, 252, 7), 2, ("yolo_N_5+C", "nms_K_7")),  # a 2-class YOLOv5 head at 64 px
        ((1, 7, 8), 3, ("yolo_4+C_N", "yolo_N_5+C")),  # 3 classes either way round
    ],
)
def test_a_shape_that_fits_several_layouts_is_refused_until_layout_picks_one(
    shape: tuple[int, ...], labels: int | None, candidates: tuple[str, ...]
) -> None:
    out = [Tensor("out", shape, shape)]
    with pytest.raises(ModelError) as refused:
        read_layout(out, 3, n_labels=labels)
    msg = str(refused.value)
    assert msg.startswith(f"cannot read output 'out' {list(shape)}: ") and "not guessed" in msg
    assert "pass " + " or ".join(f"--layout {c}" for c in candidates) in msg
    for pick in candidates:
        got = read_layout(out, 3, n_labels=labels, layout=pick)
        assert got.layout == pick and got.task == "detection"
        assert got.classes == {"yolo_4+C_N": shape[1] - 4, "yolo_N_5+C": shape[2] - 5}.get(pick, 0)


def test_a_layout_the_shape_cannot_be_is_refused() -> None:
    from engines.detection import LAYOUTS
    from engines.model_add import COLUMNS, DETECTION_LAYOUTS

    assert set(DETECTION_LAYOUTS) == set(LAYOUTS) == set(COLUMNS)  # the lazy copy agrees
    yolo8 = [Tensor("output0", (1, 7, 64), (1, 7, 64))]
    assert read_layout(yolo8, 3, n_labels=3).layout == "yolo_4+C_N"  # one fits: no --layout needed
    with pytest.raises(ModelError, match="--layout nms_K_6 does not fit this shape with 3 labels; it fits yolo_4\\+C_N"):
        read_layout(yolo8, 3, n_labels=3, layout="nms_K_6")
    with pytest.raises(ModelError, match="--layout must be one of yolo_4\\+C_N, .*got 'yolo'"):
        read_layout(yolo8, 3, layout="yolo")
    with pytest.raises(ModelError, match="--layout is for detection models, not --task segmentation"):
        read_layout(yolo8, 3, task="segmentation", layout="yolo_4+C_N")
    seg = [Tensor("mask", (1, 2, 8, 8), (1, 2, 8, 8))]
    with pytest.raises(ModelError, match="a 4-D image output cannot be a detection head"):
        read_layout(seg, 3, layout="yolo_4+C_N")
    split = [Tensor(n, (1, 9, 4 if n == "boxes" else 2), (1, 9, 4 if n == "boxes" else 2)) for n in ("boxes", "scores")]
    with pytest.raises(ModelError, match="--layout nms_split does not fit outputs named boxes, scores"):
        read_layout(split, 3, layout="nms_split")
    assert read_layout(split, 3, layout="ssd_boxes_scores").layout == "ssd_boxes_scores"


def test_yolo5_head_or_nms_rows_through_model_add_and_a_pipeline(
    tmp_path: Path, user_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1-class YOLOv5 head 1 x 3 x 6 (hand-weighted export) is refused without --layout,
    with the candidates named; `--layout yolo_N_5+C` gives its boxes. Two-class NMS rows
    1 x 2 x 7 are refused too; `--layout nms_K_7` reads them."""
    import numpy as np

    from .test_detection import export_fixed, run_user_model

    rows = np.array(  # cx, cy, w, h, objectness, class score; the last below the threshold
        [[[32, 32, 16, 8, 1.0, 0.9], [52, 20, 8, 8, 0.8, 0.75], [10, 50, 6, 6, 1.0, 0.1]]], np.float32
    )
    path = export_fixed(tmp_path, {"output0": rows}, "y5.onnx")
    with pytest.raises(ModelError, match="yolo_N_5\\+C \\(a YOLO head with 1 class\\) or nms_K_6 \\(NMS rows"):
        add_model(str(path), name="y5", labels="tool")
    assert not (user_dir / "y5").exists()
    assert main(["model", "add", str(path), "--name", "y5", "--labels", "tool"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --layout yolo_N_5+C or --layout nms_K_6" in err
    assert main(["model", "add", str(path), "--name", "y5", "--labels", "tool", "--layout", "yolo_N_5+C"]) == 0
    card = json.loads((user_dir / "y5" / "card.json").read_text())
    assert (card["output"]["layout"], card["labels"]) == ("yolo_N_5+C", ["tool"])
    boxes = run_user_model("y5", np.zeros((64, 64), np.uint8))  # square: no letterbox padding
    assert [(b.label, round(b.score, 2)) for b in boxes] == [(0, 0.9), (0, 0.6)]
    assert [boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1] == pytest.approx([24, 28, 40, 36])

    nms = np.array(  # batch, x1, y1, x2, y2, class, score
        [[[0, 4, 6, 20, 30, 1, 0.8], [0, 40, 40, 60, 50, 0, 0.7]]], np.float32
    )
    path = export_fixed(tmp_path, {"dets": nms}, "nms.onnx")
    with pytest.raises(ModelError, match="pass --layout yolo_N_5\\+C or --layout nms_K_7"):
        add_model(str(path), name="nms", labels="a,b")
    r = add_model(str(path), name="nms", labels="a,b", layout="nms_K_7")
    assert r.card["output"]["columns"][0] == "batch"
    boxes = run_user_model("nms", np.zeros((64, 64), np.uint8))
    got = [(b.label, round(b.score, 2), [b.x0, b.y0, b.x1, b.y1]) for b in boxes]
    assert got == [(1, 0.8, [4, 6, 20, 30]), (0, 0.7, [40, 40, 60, 50])]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "channels_out"), [("segmentation", 2), ("denoising", 1)])
def test_user_model_runs_end_to_end(
    task: str, channels_out: int, tmp_path: Path, user_dir: Path
) -> None:
    """`medstream model add`, then `medstream run` of a config naming the model (the child
    processes see $MEDSTREAM_MODELS from the `user_dir` fixture)."""
    path = export(Seg(1, channels_out), tmp_path / "mine.onnx", channels=1)
    add = medstream("model", "add", str(path), "--task", task)
    out, err = add.communicate(timeout=120)
    assert add.returncode == 0, err
    assert f"task           {task}" in out and "ms per frame" in out
    models = medstream("models")
    listing, _ = models.communicate(timeout=120)
    assert any(line.split()[:3] == ["mine", "user", task] for line in listing.splitlines())
    cfg = light_config(tmp_path, fps=15, size=64)
    data = yaml.safe_load(cfg.read_text())
    data["stages"][1]["engine"]["model"] = "mine"
    data["stages"][0]["source"]["truth"] = False
    cfg.write_text(yaml.safe_dump(data))
    report = tmp_path / "report.json"
    run = medstream("run", str(cfg), "--duration", "4", "--report", str(report))
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-2000:]
    rep = json.loads(report.read_text())
    assert rep["frames"]["delivered"] > 10 and rep["frames"]["accounted"]
    assert rep["engines"]["infer"]["model"] == "mine"
    shown = rep["overlay"]["frames_shown"]
    assert shown == (rep["frames"]["delivered"] if task == "segmentation" else 0)


@pytest.mark.slow
def test_validate_refuses_a_detection_card_it_cannot_read(tmp_path: Path, user_dir: Path) -> None:
    add_model(str(export(Yolo8(2), tmp_path / "det.onnx")), name="det", labels="a,b")
    card_path = user_dir / "det" / "card.json"
    card = json.loads(card_path.read_text())
    card["output"]["layout"] = "yolo_v99"  # edited by hand
    card_path.write_text(json.dumps(card))
    cfg = light_config(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["stages"][1]["engine"]["model"] = "det"
    cfg.write_text(yaml.safe_dump(data))
    val = medstream("validate", str(cfg))
    _, err = val.communicate(timeout=120)
    assert val.returncode != 0
    assert "model 'det': output.layout must be one of yolo_4+C_N" in err


def test_sigmoid_channel_becomes_two_class_logits() -> None:
    import numpy as np

    from engines.postprocess import labels_with_confidence, two_class_logits

    p = np.array([0.1, 0.4, 0.6, 0.95], np.float32).reshape(1, 1, 2, 2)
    labels, _ = labels_with_confidence(two_class_logits(p, "probabilities"), (2, 2), 0.0)
    assert labels.tolist() == [[0, 0], [1, 1]]
    z = np.log(p / (1 - p))
    labels_z, conf = labels_with_confidence(two_class_logits(z, "logits"), (2, 2), 0.0)
    assert labels_z.tolist() == labels.tolist()
    assert conf[1, 1] == round(255 * (0.95 - 0.05))
    with pytest.raises(ValueError, match="logits' or 'probabilities"):
        two_class_logits(p, "softmax")


def test_user_models_folder_default_and_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines.registry import user_models_dir

    monkeypatch.delenv("MEDSTREAM_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_models_dir() == tmp_path / ".local/share/medstream/models"
    monkeypatch.setenv("MEDSTREAM_MODELS", str(tmp_path / "elsewhere"))
    assert user_models_dir() == tmp_path / "elsewhere"
