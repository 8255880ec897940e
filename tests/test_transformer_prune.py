"""The transformer row (us-seg-former), channel pruning (us-seg-pruned) and evaluate's cost
columns: pruning shrinks channels as asked, cards say what was built, smoke runs of the scripts.
(ONNX Runtime vs TorchScript agreement of both models: tests/test_engines.py, parametrised.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra: pip install -e '.[train]'")
onnx = pytest.importorskip("onnx", reason="needs the train extra: pip install -e '.[train]'")

from engines import EngineSpec, load_pipeline  # noqa: E402
from engines.registry import resolve_model  # noqa: E402
from stream.sources.phantom import LABELS  # noqa: E402
from tools.eval_cost import network_cost, pareto_front  # noqa: E402
from tools.onnx_flops import count_flops  # noqa: E402
from tools.prune_seg import (  # noqa: E402
    distillation_loss,
    prune_segnet,
    pruned_widths,
    reestimate_batchnorm,
)
from tools.seg_net import SegNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _random_segnet() -> SegNet:
    torch.manual_seed(0)
    net = SegNet(len(LABELS))
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_pruning_shrinks_every_layer_as_asked_and_keeps_the_output_shape() -> None:
    net = _random_segnet()
    x = torch.rand(2, 1, 64, 96)
    for keep in (0.75, 0.5, 0.35):
        pruned = prune_segnet(net, keep)
        assert pruned.widths == pruned_widths(net.widths, keep)
        assert all(p < w for p, w in zip(pruned.widths, net.widths, strict=True))
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        small = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(small) == len(convs)
        for a, b in zip(convs[:-1], small[:-1], strict=True):  # all but the classifier shrink
            assert b.out_channels < a.out_channels and b.in_channels <= a.in_channels
        assert small[-1].out_channels == len(LABELS)
        with torch.no_grad():
            assert pruned(x).shape == net(x).shape == (2, len(LABELS), 64, 96)
        assert sum(p.numel() for p in pruned.parameters()) < sum(
            p.numel() for p in net.parameters()
        )
    with torch.no_grad():  # keep 1.0 is the same network, channel for channel
        torch.testing.assert_close(prune_segnet(net, 1.0)(x), net(x), rtol=0, atol=1e-6)


def test_pruning_keeps_the_filters_with_the_largest_l1_norm() -> None:
    net = _random_segnet()
    with torch.no_grad():
        net.stem[0].weight[[1, 5, 9]] *= 100.0  # three stem filters stand out
    pruned = prune_segnet(net, 0.25)  # keeps 4 of 16 stem filters
    kept = pruned.stem[0].weight
    for i in (1, 5, 9):
        assert any(torch.equal(net.stem[0].weight[i], k) for k in kept), i


def test_iterative_pruning_reaches_the_widths_of_one_cut() -> None:
    net = _random_segnet()
    half = pruned_widths(net.widths, 0.5)
    twice = prune_segnet(prune_segnet(net, 0.75), 0.5, half)  # 0.5 cut from the 0.75 network
    assert twice.widths == half == prune_segnet(net, 0.5).widths
    with pytest.raises(ValueError, match="widths"):
        prune_segnet(prune_segnet(net, 0.5), 1.0, pruned_widths(net.widths, 0.75))


def _folded_segnet() -> SegNet:
    """A SegNet whose BatchNorms are `x + bias`, as after load_onnx_weights."""
    net = _random_segnet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
    return net.eval()


def test_batchnorm_reestimation_keeps_the_function_and_measures_the_inputs() -> None:
    net, x = _folded_segnet(), torch.randn(6, 1, 32, 48).numpy()
    with torch.no_grad():
        before = net(torch.from_numpy(x))
    reestimate_batchnorm(net, x, batch=6)
    bn = net.stem[1]
    assert bn.running_var.min() > 0 and not torch.allclose(
        bn.running_var, torch.ones_like(bn.running_var)
    )
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(torch.from_numpy(x)), before, rtol=0, atol=1e-4)
        # batch statistics of the same frames: training mode starts where eval mode is
        torch.testing.assert_close(net.train()(torch.from_numpy(x)), before, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="folded"):
        reestimate_batchnorm(_random_segnet(), x)


def test_distillation_loss_is_zero_only_at_the_teacher() -> None:
    teacher = torch.randn(2, 4, 8, 8)
    assert float(distillation_loss(teacher.clone(), teacher, 2.0)) == pytest.approx(0, abs=1e-6)
    student = torch.zeros(2, 4, 8, 8, requires_grad=True)
    loss = distillation_loss(student, teacher.half(), 2.0)
    assert loss.item() > 0.01
    loss.backward()
    moved = (student - 0.5 * student.grad).detach()  # a step down the gradient
    assert float(distillation_loss(moved, teacher, 2.0)) < loss.item()


def test_keep_ratio_out_of_range() -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="keep ratio must be in"):
            pruned_widths((16, 32, 48, 64), bad)


def test_pareto_front_of_known_points() -> None:
    # (ms, accuracy): b is slower and worse than a; d ties a in time but is more accurate
    points = [(5.0, 0.90), (6.0, 0.85), (20.0, 0.97), (5.0, 0.95), (30.0, 0.97)]
    assert pareto_front(points) == [False, False, True, True, False]
    assert pareto_front([(1.0, 0.5)]) == [True]


def test_network_cost_sums_the_networks_of_a_row() -> None:
    assert network_cost(("classical-nlm", "classical-otsu")) == {}
    seg = network_cost((None, "us-seg"))
    assert seg["parameters"] == resolve_model("us-seg").card.raw["architecture"]["parameters"]
    assert seg["gflops"] == pytest.approx(
        count_flops(resolve_model("us-seg").onnx_path).gflops, abs=1e-4
    )
    both = network_cost(("us-denoise", "us-seg"))
    assert both["gflops"] > seg["gflops"] and both["parameters"] > seg["parameters"]
    assert network_cost(("classical-median", "us-seg")) == seg


def test_transformer_card_and_export() -> None:
    ref = resolve_model("us-seg-former")
    card = ref.card.raw
    assert card["task"] == "segmentation" and card["labels"] == LABELS
    assert card["architecture"]["name"].startswith("SegFormer")
    assert card["command"].startswith("python -m tools.train_transformer_seg")
    assert {"seed", "train_seconds", "threads"} <= set(card["training"])
    assert max(card["export_check"].values()) < 1e-4
    graph = onnx.load(str(ref.onnx_path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization"} <= ops  # attention exported as plain ops
    count = count_flops(ref.onnx_path)
    assert not count.unknown and card["cost"]["gflops"] == pytest.approx(count.gflops, abs=1e-4)
    assert card["metrics"]["pixel_accuracy_fov"] > 0.9  # it learnt the phantom


def test_pruned_card_is_narrower_than_us_seg() -> None:
    pruned, full = resolve_model("us-seg-pruned").card.raw, resolve_model("us-seg").card.raw
    assert card_widths(pruned) == list(
        pruned_widths(tuple(card_widths(full)), pruned["pruning"]["keep"])
    )
    assert pruned["pruning"]["source"] == "us-seg" and 0 < pruned["pruning"]["keep"] < 1
    assert pruned["architecture"]["parameters"] < full["architecture"]["parameters"]
    assert pruned["cost"]["gflops"] < full["cost"]["gflops"]
    assert pruned["command"].startswith("python -m tools.prune_seg")
    assert pruned["normalization"] == full["normalization"]


def card_widths(card: dict) -> list[int]:
    return list(card["architecture"]["widths"])


def _run(module: str, *args: str) -> str:
    cmd = [sys.executable, "-m", module, *args, "--quick"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow  # a training run
def test_quick_transformer_training_run(tmp_path: Path) -> None:
    out = tmp_path / "former"
    stdout = _run("tools.train_transformer_seg", "--out", str(out), "--threads", "1")
    assert "epoch 1/1" in stdout and "held-out Dice" in stdout
    card = json.loads((out / "card.json").read_text())
    assert card["command"].endswith("--threads 1 --quick") and card["training"]["seed"] == 0
    assert set(card["metrics"]["dice"]) == set(LABELS) and "metrics_anatomy" in card
    for backend in ("onnxruntime", "pytorch"):
        p = load_pipeline(EngineSpec(model=str(out / "model.onnx"), backend=backend))
        mask = p(np.zeros((300, 400), np.uint8), "gray8").mask
        assert mask is not None and mask.shape == (300, 400), backend
        p.close()


@pytest.mark.slow  # fine-tuning runs
def test_quick_pruning_run(tmp_path: Path) -> None:
    stdout = _run(
        "tools.prune_seg",
        *("--out", str(tmp_path / "model"), "--work", str(tmp_path / "work")),
        *("--docs", str(tmp_path / "docs"), "--keep", "1.0,0.5"),
    )
    assert "keep 0.5" in stdout
    report = json.loads((tmp_path / "docs" / "pruning.json").read_text())
    assert [p["keep"] for p in report["points"]] == [1.0, 0.5]
    assert report["points"][1]["gflops"] < report["points"][0]["gflops"]
    assert (tmp_path / "docs" / "pruning.md").read_text().count("\n| ") == 3
    card = json.loads((tmp_path / "model" / "card.json").read_text())
    assert card["pruning"]["keep"] == report["shipped"]["keep"]
    assert (tmp_path / "model" / "model.pt").is_file()
