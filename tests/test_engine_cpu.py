"""The CPU inference path: preprocessing math, registry, ONNX Runtime engine, bundled model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines import (
    EngineSpec,
    EngineUnavailable,
    InferenceResult,
    ModelError,
    list_models,
    load_pipeline,
)
from engines.onnxrt import OnnxRuntimeEngine
from engines.pipeline import resolve_backend
from engines.postprocess import argmax_labels, labels_from_logits
from engines.preprocess import preprocess
from engines.registry import MODELS_DIR, ModelInput, load_card, resolve_model
from stream.sources.phantom import LABELS, phantom_frame
from tools.eval_common import parse_seeds
from tools.eval_seg import evaluate, phantom_set

PREPROCESS_TOL = 1e-4  # normalised units; the stated CPU/CUDA agreement (preprocess.py)
BUNDLED = "us-seg"


# --- preprocessing against a float64 reference --------------------------------------------


def _resize_ref(src: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear, half-pixel centres, coordinates clamped to the image: float64."""
    height, width = src.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(s).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), s - i0

    y0, y1, ay = axis(h, height)
    x0, x1, ax = axis(w, width)
    f = src.astype(np.float64)
    if f.ndim == 2:
        f = f[:, :, None]
    ay, ax = ay[:, None, None], ax[None, :, None]
    top = f[y0][:, x0] * (1 - ax) + f[y0][:, x1] * ax
    bottom = f[y1][:, x0] * (1 - ax) + f[y1][:, x1] * ax
    return top * (1 - ay) + bottom * ay


def _preprocess_ref(image: np.ndarray, pixel_format: str, spec: ModelInput) -> np.ndarray:
    r = _resize_ref(image, spec.height, spec.width)  # h x w x Cs
    if pixel_format == "bgr8":
        r = r[:, :, ::-1]  # -> rgb
    if spec.channels == "gray" and r.shape[2] == 3:
        r = r @ np.array([0.299, 0.587, 0.114])[:, None]
    elif spec.channels in ("rgb", "bgr") and r.shape[2] == 1:
        r = np.repeat(r, 3, axis=2)
    elif spec.channels == "bgr":
        r = r[:, :, ::-1]
    v = (r / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    return v.transpose(2, 0, 1)[None]


def _input(channels: str, h: int = 256, w: int = 256) -> ModelInput:
    n = 1 if channels == "gray" else 3
    return ModelInput("image", channels, h, w, "float32", (0.2, 0.4, 0.3)[:n], (0.25, 0.3, 0.2)[:n])


CASES = [
    ("gray8", "gray", (512, 512)),  # the live ultrasound case: exact 2x shrink
    ("gray8", "gray", (301, 417)),  # odd sizes: border clamping, non-integer ratios
    ("gray8", "gray", (100, 90)),  # enlarging
    ("gray8", "gray", (256, 256)),  # no resize
    ("bgr8", "gray", (480, 640)),
    ("rgb8", "gray", (200, 333)),
    ("bgr8", "rgb", (720, 1280)),
    ("bgr8", "bgr", (97, 131)),
    ("gray8", "rgb", (300, 300)),
]


@pytest.mark.parametrize(("pixel_format", "channels", "size"), CASES)
def test_preprocess_matches_float64_reference(
    pixel_format: str, channels: str, size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(size))
    shape = size if pixel_format == "gray8" else (*size, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    spec = _input(channels, 256, 192)
    got = preprocess(image, pixel_format, spec)
    want = _preprocess_ref(image, pixel_format, spec)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape == (1, spec.num_channels, 256, 192)
    np.testing.assert_allclose(got, want, rtol=0, atol=PREPROCESS_TOL)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 80),
    w=st.integers(1, 80),
    oh=st.integers(1, 64),
    ow=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_preprocess_any_size(h: int, w: int, oh: int, ow: int, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    spec = _input("gray", oh, ow)
    got = preprocess(image, "bgr8", spec)
    np.testing.assert_allclose(
        got, _preprocess_ref(image, "bgr8", spec), rtol=0, atol=PREPROCESS_TOL
    )


@pytest.mark.parametrize(("pixel_format", "channels"), [("gray8", "gray"), ("bgr8", "gray"), ("bgr8", "rgb"), ("bgr8", "bgr")])
def test_preprocess_float16_matches_float64_reference(pixel_format: str, channels: str) -> None:
    """fp16 output: the float32 result rounded once to fp16 (|v| < 8: within 2^-8)."""
    rng = np.random.default_rng(11)
    shape = (301, 417) if pixel_format == "gray8" else (301, 417, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    spec = ModelInput(**{**_input(channels, 128, 160).__dict__, "dtype": "float16"})
    got = preprocess(image, pixel_format, spec)
    assert got.dtype == np.float16 and got.flags.c_contiguous
    want = _preprocess_ref(image, pixel_format, spec)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=4e-3)


def test_preprocess_float16() -> None:
    spec = ModelInput("image", "gray", 64, 64, "float16", (0.5,), (0.25,))
    image = np.full((128, 128), 255, np.uint8)
    got = preprocess(image, "gray8", spec)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, 2.0)


# --- postprocessing ----------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_argmax_matches_numpy_with_ties(c: int, seed: int) -> None:
    logits = np.random.default_rng(seed).integers(0, 3, (c, 17, 23)).astype(np.float32)
    np.testing.assert_array_equal(argmax_labels(logits), np.argmax(logits, axis=0))


def test_labels_resize_nearest_aligned() -> None:
    logits = np.zeros((1, 3, 2, 3), np.float32)
    logits[0, 1, 0, 1] = 1  # label 1 at (0, 1)
    logits[0, 2, 1, 2] = 1  # label 2 at (1, 2)
    mask = labels_from_logits(logits, (4, 6))
    want = np.array(
        [[0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 2, 2], [0, 0, 0, 0, 2, 2]]
    )
    np.testing.assert_array_equal(mask, want)
    assert mask.dtype == np.uint8
    with pytest.raises(ValueError, match="1 x C x h x w"):
        labels_from_logits(logits[0], (4, 6))


# --- registry and bundled model ----------------------------------------------------------


def test_bundled_model_is_listed_and_small() -> None:
    assert BUNDLED in list_models()
    ref = resolve_model(BUNDLED)
    assert ref.onnx_path == MODELS_DIR / BUNDLED / "model.onnx"
    assert ref.onnx_path.stat().st_size < 1_000_000


def test_card_fields() -> None:
    card = load_card(MODELS_DIR / BUNDLED / "card.json")
    assert card.task == "segmentation" and list(card.labels) == LABELS
    assert (card.input.name, card.input.channels, card.input.height, card.input.width) == (
        "image",
        "gray",
        256,
        256,
    )
    assert card.output == "logits"
    raw = card.raw
    for key in ("metrics", "cost", "training", "command", "versions", "normalization"):
        assert key in raw, key
    assert set(raw["metrics"]["dice"]) == set(LABELS)
    assert 0 < raw["metrics"]["mean_foreground_dice"] <= 1
    assert 0 < raw["metrics"]["pixel_accuracy_fov"] <= 1
    assert raw["cost"]["gflops"] > 0 and raw["cost"]["latency_ms"]["pipeline_median_ms"] > 0
    assert raw["command"].startswith("python -m tools.train_seg")
    assert {"torch", "onnx", "onnxruntime"} <= set(raw["versions"])
    held_out = set(parse_seeds(raw["metrics"]["data"].split("seeds ")[1].split(",")[0]))
    assert not held_out & set(parse_seeds(raw["training"]["train_seeds"]))


def test_unknown_model_name() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'no-such-model'.*us-seg"):
        load_pipeline(EngineSpec(model="no-such-model"))


def test_model_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.onnx"))
    lone = tmp_path / "lone.onnx"
    shutil.copy(MODELS_DIR / BUNDLED / "model.onnx", lone)
    with pytest.raises(ModelError, match="no card.json beside it"):
        resolve_model(str(lone))
    card = json.loads((MODELS_DIR / BUNDLED / "card.json").read_text())
    del card["normalization"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"card.json: missing key 'normalization'"):
        resolve_model(str(lone))


def test_model_by_path_with_card(tmp_path: Path) -> None:
    for name in ("model.onnx", "card.json"):
        shutil.copy(MODELS_DIR / BUNDLED / name, tmp_path / name)
    pipeline = load_pipeline(EngineSpec(model=str(tmp_path / "model.onnx")))
    assert pipeline.model_id == str(tmp_path / "model.onnx")
    pipeline.close()


def test_card_must_match_the_model(tmp_path: Path) -> None:
    shutil.copy(MODELS_DIR / BUNDLED / "model.onnx", tmp_path / "model.onnx")
    card = json.loads((MODELS_DIR / BUNDLED / "card.json").read_text())
    card["labels"] = ["a", "b"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="4 output classes but 2 labels"):
        load_pipeline(EngineSpec(model=str(tmp_path / "model.onnx")))


# --- engine and pipeline ---------------------------------------------------------------------


def test_onnxruntime_engine_describes_and_checks() -> None:
    engine = OnnxRuntimeEngine(MODELS_DIR / BUNDLED / "model.onnx", threads=1, optimization="basic")
    (inp,), (out,) = engine.inputs, engine.outputs
    assert inp.name == "image" and inp.shape[1:] == (1, 256, 256) and inp.dtype == np.float32
    assert out.name == "logits" and out.shape[1:] == (4, 256, 256)
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    batch = np.zeros((2, 1, 256, 256), np.float32)
    assert engine.run({"image": batch})["logits"].shape == (2, 4, 256, 256)
    with pytest.raises(ValueError, match="must be float32, got float64"):
        engine.run({"image": batch.astype(np.float64)})
    with pytest.raises(ValueError, match="must have shape"):
        engine.run({"image": np.zeros((1, 1, 128, 128), np.float32)})
    with pytest.raises(ValueError, match="inputs must be exactly"):
        engine.run({"img": batch})
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.run({"image": batch})


def test_engine_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load ONNX model"):
        OnnxRuntimeEngine(bad)
    with pytest.raises(ValueError, match="optimization"):
        OnnxRuntimeEngine(MODELS_DIR / BUNDLED / "model.onnx", optimization="max")


def test_backends() -> None:
    """`auto` is ONNX Runtime on this CPU machine, and the pipeline says why."""
    assert resolve_backend("auto") == "onnxruntime"
    pipeline = load_pipeline(EngineSpec(backend="auto"))
    assert (pipeline.backend, pipeline.device, pipeline.precision) == ("onnxruntime", "cpu", "fp32")
    assert pipeline.model_id == BUNDLED and pipeline.labels == LABELS
    assert pipeline.selection.startswith("auto: TensorRT not usable (")
    assert "ONNX Runtime" in pipeline.selection and "\n" not in pipeline.selection
    pipeline.close()
    with pytest.raises(EngineUnavailable, match="TensorRT is not usable here") as err:
        load_pipeline(EngineSpec(backend="tensorrt"))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="backend 'classical' runs the classical-\\* methods only"):
        load_pipeline(EngineSpec(backend="classical"))


@pytest.fixture(scope="module")
def pipeline():  # type: ignore[no-untyped-def]
    p = load_pipeline(EngineSpec(model=BUNDLED, threads=1))
    yield p
    p.close()


def test_pipeline_result_shapes(pipeline) -> None:  # type: ignore[no-untyped-def]
    image = phantom_frame(phantom_set([2000], 1).__next__()[0], 0).image
    result = pipeline(image, "gray8")
    assert isinstance(result, InferenceResult)
    assert (
        result.mask is not None
        and result.mask.shape == image.shape
        and result.mask.dtype == np.uint8
    )
    assert set(result.timings_ms) == {"preprocess", "engine", "postprocess", "gate"}
    assert all(v >= 0 for v in result.timings_ms.values())
    assert result.confidence is not None and result.confidence.shape == image.shape
    assert result.applicability is not None and result.applicability["applicable"]
    bgr = np.repeat(image[:, :, None], 3, axis=2)
    colour = pipeline(bgr, "bgr8").mask
    assert colour is not None and np.mean(colour == result.mask) > 0.99  # same grey -> same labels
    odd = pipeline(image[:300, :400], "gray8").mask
    assert odd is not None and odd.shape == (300, 400)


@pytest.mark.parametrize(
    ("image", "pixel_format", "match"),
    [
        (np.zeros((64, 64), np.float32), "gray8", "must be uint8, got float32"),
        (np.zeros((64, 64, 3), np.uint8), "gray8", "gray8 image must be H x W"),
        (np.zeros((64, 64), np.uint8), "bgr8", "bgr8 image must be H x W x 3"),
        (np.zeros((64, 64, 4), np.uint8), "rgb8", "rgb8 image must be H x W x 3"),
        (np.zeros((64, 64), np.uint8), "gray16", "unsupported pixel format 'gray16'"),
        (np.zeros((0, 64), np.uint8), "gray8", "empty"),
        ([[0, 1], [2, 3]], "gray8", "numpy array"),
    ],
)
def test_pipeline_bad_input(pipeline, image: object, pixel_format: str, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        pipeline(image, pixel_format)


def test_pipeline_dice_on_held_out_phantoms(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Seeds beyond the card's held-out set: never seen in training nor in the card's metrics."""
    card = json.loads((MODELS_DIR / BUNDLED / "card.json").read_text())
    reported = card["metrics"]["mean_foreground_dice"]
    result = evaluate(pipeline, phantom_set(range(5000, 5008), 2, offset=11))
    assert result["frames"] == 16
    assert reported >= 0.8  # the bar the bundled model was trained to
    assert result["mean_foreground_dice"] >= reported - 0.07, result  # 0.915 when written
    assert result["pixel_accuracy_fov"] >= 0.93, result
    for name in LABELS:
        assert result["dice"][name] is not None and result["dice"][name] > 0.6, result
