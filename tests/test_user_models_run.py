"""The two-command path for detection and classification: `medstream model add FILE.onnx`, then
`medstream run` of a config naming the model; the run report shows the boxes and labels.
(Segmentation and denoising: tests/test_model_add.py `test_user_model_runs_end_to_end`.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from .pipelines import light_config, medstream
from .test_detection import LABELS, export_fixed, yolo8_tensor

CLASSES = ("normal", "benign", "malignant", "artefact")


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv("MEDSTREAM_MODELS", str(folder))
    return folder


def add_and_run(tmp_path: Path, onnx: Path, labels: tuple[str, ...], engine: dict) -> dict:
    """`model add` then `run` (4 s, 64 px phantom at 15 fps); returns the run report."""
    add = medstream("model", "add", str(onnx), "--name", "mine", "--labels", ",".join(labels))
    out, err = add.communicate(timeout=120)
    assert add.returncode == 0, err
    cfg = light_config(tmp_path, fps=15, size=64)
    data = yaml.safe_load(cfg.read_text())
    data["stages"][1]["engine"] = {"model": "mine", **engine}
    data["stages"][0]["source"]["truth"] = False
    cfg.write_text(yaml.safe_dump(data))
    report = tmp_path / "report.json"
    run = medstream("run", str(cfg), "--duration", "4", "--report", str(report))
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-2000:]
    rep = json.loads(report.read_text())
    assert rep["frames"]["delivered"] > 10 and rep["frames"]["accounted"]
    assert rep["engines"]["infer"]["model"] == "mine"
    rep["_stdout"], rep["_stderr"] = out, err
    return rep


@pytest.mark.slow
def test_yolo_detector_from_onnx_to_boxes_in_the_report(tmp_path: Path, user_dir: Path) -> None:
    onnx = export_fixed(tmp_path, {"output0": yolo8_tensor()})
    rep = add_and_run(tmp_path, onnx, LABELS, {"conf_threshold": 0.3, "iou_threshold": 0.5})
    n = rep["frames"]["delivered"]
    results = rep["results"]
    # every frame: A (grasper), C and E (hook); B merged into A by NMS, D below the threshold
    assert results["frames_with_boxes"] == n
    assert results["boxes"] == {"grasper": n, "hook": 2 * n}
    assert rep["overlay"]["frames_shown"] == n
    assert f"detections: {3 * n} boxes on {n} frames (grasper {n}, hook {2 * n})" in rep["_stdout"]


@pytest.mark.slow
def test_boxes_cut_by_max_boxes_are_counted_logged_and_reported(tmp_path: Path, user_dir: Path) -> None:
    onnx = export_fixed(tmp_path, {"output0": yolo8_tensor()})
    rep = add_and_run(tmp_path, onnx, LABELS, {"conf_threshold": 0.3, "iou_threshold": 0.5, "max_boxes": 2})
    n = rep["frames"]["delivered"]
    results = rep["results"]
    assert results["boxes"] == {"grasper": n, "hook": n}  # A and C kept, E (0.6) cut every time
    counters = rep["stages"]["infer"]["counters"]
    runs = counters["out"] - sum(v for k, v in counters.items() if k.startswith("reused_"))  # model runs
    assert results["boxes_cut"] == counters["boxes_cut"] == runs >= n
    assert f"detections: {2 * n} boxes on {n} frames (grasper {n}, hook {n}); {runs} boxes cut" in rep["_stdout"]
    warned = [ln for ln in rep["_stderr"].splitlines() if "more than max_boxes 2" in ln]
    assert len(warned) == 1 and "engine.max_boxes" in warned[0]  # once per run


@pytest.mark.slow
def test_classifier_from_onnx_to_top1_in_the_report(tmp_path: Path, user_dir: Path) -> None:
    logits = np.array([[0.5, 2.0, 1.0, -1.0]], np.float32)  # benign, then malignant
    onnx = export_fixed(tmp_path, {"logits": logits}, "cls.onnx")
    rep = add_and_run(tmp_path, onnx, CLASSES, {"top_k": 2})
    n = rep["frames"]["delivered"]
    assert rep["results"]["top1"] == {"benign": n}
    assert rep["results"]["boxes"] == {}
    assert f"classification top-1: benign {n}" in rep["_stdout"]
