"""The applicability gate and the per-pixel confidence (engines/applicability.py, postprocess)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engines import EngineSpec, load_pipeline
from engines.applicability import FEATURES, Gate, Reference, frame_features, softmax_margin
from engines.postprocess import confident_labels, labels_with_confidence
from engines.registry import ModelError, load_card, resolve_model
from stream.frame import Frame
from stream.sources.phantom import PhantomSpec, phantom_frame
from stream.stages.infer import annotate_frame, reuse_result
from tools.gate_data import synthetic_ood_frames

DEMO = PhantomSpec(seed=2024, geometry="sector")  # configs/ultrasound_seg.yaml's source


@pytest.fixture(scope="module")
def us_seg():  # type: ignore[no-untyped-def]
    p = load_pipeline(EngineSpec(model="us-seg", backend="onnxruntime", threads=1))
    yield p
    p.close()


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate.from_card(resolve_model("us-seg").card.raw["applicability"], "us-seg")


def test_demo_phantom_frames_are_applicable(gate: Gate) -> None:
    # seeds the calibration never saw, both probe geometries, frames across 10 s
    for spec in (PhantomSpec(seed=4242, geometry="sector"), PhantomSpec(seed=4243, geometry="linear")):
        seed = spec.seed
        for index in range(0, 300, 25):
            verdict = gate.assess(phantom_frame(spec, index).image, "gray8")
            assert verdict["applicable"], (seed, index, verdict)
            assert verdict["score"] < 0.8 * verdict["threshold"], (seed, index, verdict)


@pytest.mark.parametrize("name", ["flat grey", "black", "noise", "ramp", "colour scene"])
def test_frames_unlike_the_phantom_are_not_applicable(gate: Gate, name: str) -> None:
    image, fmt = dict(synthetic_ood_frames())[name]
    verdict = gate.assess(image, fmt)
    assert not verdict["applicable"] and verdict["score"] > verdict["threshold"], verdict
    assert verdict["method"] == "input_stats" and verdict["threshold"] == gate.threshold


def test_real_echo_cine_is_not_applicable(gate: Gate) -> None:
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from tools.gate_data import dicom_frames

    frames = list(dicom_frames(Path(str(get_testdata_file("examples_ybr_color.dcm")))))
    assert len(frames) == 30
    scores = [gate.assess(image, fmt)["score"] for image, fmt in frames]
    assert min(scores) > gate.threshold, scores  # out, every frame (margin ~5% since us-seg saw the anatomy phantom)


def test_gate_does_not_rest_on_colour_alone(gate: Gate) -> None:
    """A real cine turned grey is still far from the phantom (speckle, dark share, flat UI)."""
    pytest.importorskip("pydicom")
    import cv2
    from pydicom.data import get_testdata_file

    from tools.gate_data import dicom_frames

    image, fmt = next(dicom_frames(Path(str(get_testdata_file("examples_ybr_color.dcm")))))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert not gate.assess(grey, "gray8")["applicable"]


def test_features_are_the_same_for_any_frame_size() -> None:
    image = phantom_frame(DEMO, 3).image
    import cv2

    big = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    f1, f2 = frame_features(image, "gray8"), frame_features(big, "gray8")
    assert f1.shape == (len(FEATURES),)
    assert np.allclose(f1, f2, atol=0.05), (f1, f2)
    bgr = np.repeat(image[:, :, None], 3, axis=2)
    assert np.allclose(frame_features(bgr, "bgr8"), f1, atol=1e-3)


def test_reference_score_is_mahalanobis() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal([0.4, 0.0, 0.5, 0.1, 0.0, 0.5, 0.5, 0.0], 0.05, (500, len(FEATURES)))
    ref = Reference.fit(feats)
    assert ref.score(ref.mean) == 0.0
    far = ref.mean.copy()
    far[2] += 0.5  # 10 standard deviations along one feature
    assert ref.score(far) == pytest.approx(10 / np.sqrt(len(FEATURES)), rel=0.1)
    gate = Gate.from_card({"method": "input_stats", "threshold": 1.0, **ref.to_card()}, "m")
    assert gate.reference.score(far) == pytest.approx(ref.score(far), rel=1e-4)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda a: a.update(method="entropy"), "applicability.method"),
        (lambda a: a.update(threshold=-1), "applicability.threshold"),
        (lambda a: a.update(features=["x"]), "applicability.features"),
        (lambda a: a.update(inv_cov=[[1.0]]), "applicability"),
    ],
)
def test_a_malformed_gate_in_a_card_names_the_key(tmp_path: Path, mutate, key: str) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((resolve_model("us-seg").onnx_path.with_name("card.json")).read_text())
    mutate(raw["applicability"])
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=key):
        load_card(path)


def test_every_bundled_card_tells_the_user_what_the_model_is() -> None:
    from engines.registry import list_models

    for name in list_models():
        card = resolve_model(name).card
        assert card.notice == "Research use only, not for diagnosis", name
        real = name == "us-despeckle-real"  # trained on real, unlabelled scans
        assert ("Real, unlabelled" if real else "ynthetic") in card.training_data, name
        assert card.intended_use, name
        if card.task == "segmentation":
            assert 0 < card.confidence_threshold < 1 and "applicability" in card.raw, name


def _softmax_margin_reference(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(axis=0))
    p /= p.sum(axis=0)
    top = np.sort(p, axis=0)
    return top[-1] - top[-2]


def test_softmax_margin_matches_a_float64_reference() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(0, 4, (4, 32, 40)) + np.array([0, 50, -50, 0])[:, None, None]).astype(
        np.float32
    )
    got = softmax_margin(logits)
    assert got.shape == (32, 40) and got.dtype == np.float32
    assert np.allclose(got, _softmax_margin_reference(logits), atol=1e-5)
    assert np.all(softmax_margin(logits[:1]) == 1.0)


def test_pixels_below_the_confidence_threshold_are_background() -> None:
    # two classes; class 1 wins everywhere with logit gap d: margin = tanh(d / 2)
    gaps = np.linspace(0.0, 4.0, 9, dtype=np.float32)  # margins 0 .. 0.96
    logits = np.zeros((1, 2, 1, 9), np.float32)
    logits[0, 1, 0] = gaps + 1e-3
    labels, conf = labels_with_confidence(logits, (2, 18), threshold=0.5)
    margin = np.tanh((gaps + 1e-3) / 2)
    want = np.where(margin >= 0.5, 1, 0).astype(np.uint8)
    assert labels.shape == conf.shape == (2, 18)
    assert np.array_equal(labels[0, ::2], want) and np.array_equal(labels[1, 1::2], want)
    assert np.array_equal(conf[0, ::2], np.rint(margin * 255).astype(np.uint8))
    unthresholded, _ = labels_with_confidence(logits, (2, 18), threshold=0.0)
    assert (unthresholded == 1).all()


@pytest.mark.parametrize("threshold", [0.0, 0.5])
@pytest.mark.parametrize("size", [(7, 9), (14, 27), (3, 4)])
def test_the_label_map_alone_is_the_one_made_with_the_confidence_map(
    threshold: float, size: tuple[int, int]
) -> None:
    logits = np.random.default_rng(3).standard_normal((1, 3, 7, 9)).astype(np.float32)
    labels, _ = labels_with_confidence(logits, size, threshold)
    alone = confident_labels(logits, size, threshold)
    assert alone.shape == size and np.array_equal(alone, labels)
    assert threshold == 0.0 or (labels == 0).any()


def test_a_pipeline_told_nobody_reads_confidence_makes_none_and_the_same_mask(us_seg) -> None:  # type: ignore[no-untyped-def]
    image = phantom_frame(DEMO, 5).image
    full = us_seg(image, "gray8")
    us_seg.confidence = False
    try:
        alone = us_seg(image, "gray8")
    finally:
        us_seg.confidence = True
    assert full.confidence is not None and alone.confidence is None
    assert alone.mask is not None and np.array_equal(alone.mask, full.mask)
    assert us_seg(image, "gray8").confidence is not None


def test_infer_sends_confidence_applicability_and_card_and_masks_doubt(us_seg) -> None:  # type: ignore[no-untyped-def]
    image = phantom_frame(DEMO, 5).image
    frame = Frame("us", 5, 1, 2, image, "gray8", meta={"source": "phantom"})
    out = annotate_frame(frame, us_seg)
    mask, conf = out.parts["mask"], out.parts["confidence"]
    assert conf.dtype == np.uint8 and conf.shape == mask.shape == image.shape
    threshold = resolve_model("us-seg").card.confidence_threshold
    doubtful = conf < np.floor(threshold * 255)
    assert doubtful.any(), "the phantom has boundaries the model doubts"
    assert (mask[doubtful] == 0).all()
    assert (mask[conf > 250] > 0).any()
    gate = out.meta["applicability"]
    assert set(gate) == {"score", "threshold", "applicable", "method"} and gate["applicable"]
    assert out.meta["model_card"]["notice"] == "Research use only, not for diagnosis"
    assert out.meta["source"] == "phantom" and "applicability" not in frame.meta
    later = dataclasses.replace(frame, seq=6, capture_ns=3, meta={})
    reused = reuse_result(later, out, "run_every")
    assert reused.parts["confidence"] is conf
    assert reused.meta["applicability"] == gate and reused.meta["model_card"]


@pytest.mark.slow
def test_calibrate_gate_writes_a_gate_that_passes_the_phantom_and_stops_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from tools import calibrate_gate

    for name in ("model.onnx", "card.json"):
        shutil.copy(resolve_model("us-seg").onnx_path.with_name(name), tmp_path / name)
    card = json.loads((tmp_path / "card.json").read_text())
    del card["applicability"]
    card["training"]["train_seeds"] = "0-47"
    (tmp_path / "card.json").write_text(json.dumps(card))
    monkeypatch.setattr(calibrate_gate, "REFERENCE_FRAMES_PER_SEED", 3)
    monkeypatch.setattr(calibrate_gate, "CALIBRATION_SEEDS", 8)
    monkeypatch.setattr(calibrate_gate, "CALIBRATION_FRAMES", 4)
    monkeypatch.setattr(calibrate_gate, "CALIBRATION_STRIDE", 45)
    monkeypatch.setattr(calibrate_gate, "real_us_files", lambda: [])
    model = str(tmp_path / "model.onnx")
    assert calibrate_gate.main([model]) == 0
    written = load_card(tmp_path / "card.json").raw["applicability"]
    assert written["method"] == "input_stats" and "calibrate_gate" in written["calibration"]
    gate = Gate.from_card(written, model)
    phantom = [phantom_frame(PhantomSpec(seed=5000 + k), 40 * k).image for k in range(4)]
    assert all(gate.assess(image, "gray8")["applicable"] for image in phantom)
    for _, (image, fmt) in synthetic_ood_frames():
        assert not gate.assess(image, fmt)["applicable"]


def test_fill_card_info_restores_what_a_retrained_card_lacks() -> None:
    from tools.card_info import fill_card_info

    card = {"task": "segmentation", "notice": "kept"}
    assert fill_card_info(card, "us-seg") == [
        "intended_use",
        "training_data",
        "confidence_threshold",
    ]
    assert card["notice"] == "kept" and card["confidence_threshold"] == 0.5
    assert fill_card_info({"task": "denoising"}, "us-denoise") == [
        "intended_use",
        "training_data",
        "notice",
    ]
    assert fill_card_info({}, "/tmp/mine.onnx") == []


def test_infer_stage_sends_the_verdict_and_counts_frames_not_applicable(us_seg, ipc_dir) -> None:  # type: ignore[no-untyped-def]
    """Over real TCP links: phantom frames pass the gate, the real echo cine does not."""
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from stream.clock import WallClock
    from tests.helpers import infer_stage_config, running_infer_stage
    from tools.gate_data import dicom_frames

    echo = list(dicom_frames(Path(str(get_testdata_file("examples_ybr_color.dcm"))), 3))[:2]
    inputs = [(phantom_frame(DEMO, k).image, "gray8") for k in (0, 30)] + echo
    clock = WallClock()
    cfg = infer_stage_config(ipc_dir)
    outs: list[Frame] = []
    with running_infer_stage(cfg, clock, us_seg) as stage:
        for seq, (image, fmt) in enumerate(inputs):
            now = clock.now_ns()
            stage.send_and_wait(Frame("s", seq, now, now + 10**10, image, fmt, epoch=1))
        while len(outs) < len(inputs) and (msg := stage.rx.recv(2000)) is not None:
            assert msg.frame is not None
            outs.append(msg.frame)
        counters = dict(stage.rt.stats.counters)
    assert [f.meta["applicability"]["applicable"] for f in outs] == [True, True, False, False]
    assert counters["frames_not_applicable"] == 2
    for f in outs:
        conf = f.parts["confidence"]
        assert conf.dtype == np.uint8 and conf.shape == f.image.shape[:2]
        assert f.meta["model_card"]["notice"] == "Research use only, not for diagnosis"


@pytest.mark.parametrize(
    "key, value",
    [("confidence_threshold", 1.5), ("confidence_threshold", True), ("notice", 7), ("intended_use", "x" * 401)],
)
def test_malformed_card_texts_and_threshold_name_the_key(tmp_path: Path, key: str, value: object) -> None:
    raw = json.loads((resolve_model("us-seg").onnx_path.with_name("card.json")).read_text())
    raw[key] = value
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=key):
        load_card(path)


@pytest.mark.parametrize(
    "chain, applicable",
    [
        ("us-denoise+us-seg-dn", True),  # us-seg-dn was trained on us-denoise's output
        ("classical-median+us-seg", True),  # a light median keeps the phantom's statistics
        # us-seg, retrained on the anatomy mix (random gain, TGC, speckle), now also fits
        # us-denoise's output: 98% pixel accuracy on these frames, so applicable
        ("us-denoise+us-seg", True),
    ],
)
def test_a_chain_is_gated_by_its_segmenter_on_what_the_segmenter_sees(
    chain: str, applicable: bool
) -> None:
    pipeline = load_pipeline(EngineSpec(model=chain, backend="auto", threads=1))
    try:
        result = pipeline(phantom_frame(DEMO, 7).image, "gray8")
    finally:
        pipeline.close()
    assert result.applicability is not None and result.confidence is not None
    assert result.applicability["applicable"] is applicable, result.applicability
    assert pipeline.card_info["notice"] == "Research use only, not for diagnosis"  # type: ignore[attr-defined]
