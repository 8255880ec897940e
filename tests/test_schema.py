"""Typed JSON documents (engines/schema.py, msgspec): model cards and stats snapshots refuse
what does not fit with a message that names the key path, and keep keys they do not know."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engines.registry import MODELS_DIR, ModelError, load_card

CARD = json.loads((MODELS_DIR / "us-seg" / "card.json").read_text())


def _write(tmp_path: Path, mutate: Callable[[dict[str, Any]], Any]) -> Path:
    card = copy.deepcopy(CARD)
    mutate(card)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["input"].update(channels="x"), "input.channels: expected one of gray, rgb, bgr, got 'x'"),
        (lambda c: c["input"].update(height=True), "input.height: expected int, got bool"),
        (lambda c: c["input"].update(width=0), "input.width: expected int >= 1"),
        (lambda c: c["normalization"].update(std=[0]), "normalization.std[0]: expected float > 0.0"),
        (lambda c: c["normalization"].update(mean=[0.1, 0.2]), "normalization.mean: expected one number per channel (1)"),
        (lambda c: c["output"].pop("name"), "output: missing key 'name'"),
        (lambda c: c.pop("normalization"), "missing key 'normalization'"),
        (lambda c: c.update(labels=[]), "a segmentation model needs labels"),
        (lambda c: c.update(notice="x" * 401), "notice: expected str of length <= 400"),
        (lambda c: c.update(torchscript="../model.pt"), "torchscript must be a file name"),
    ],
)
def test_a_bad_card_names_the_file_and_the_key(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, mutate)
    with pytest.raises(ModelError, match="^" + re.escape(f"{path}: {message}")):
        load_card(path)


def test_a_card_keeps_keys_it_does_not_check(tmp_path: Path) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["output"]["boxes"] = {"format": "xyxy"}  # e.g. a detection head's description
        c["input"]["dtype"] = "float16"
        del c["confidence_threshold"]

    card = load_card(_write(tmp_path, mutate))
    assert card.raw["output"]["boxes"] == {"format": "xyxy"} and card.raw["metrics"]
    assert card.precision == "fp16" and card.confidence_threshold == 0.0
    assert card.input.mean == (0.205,) and card.output == "logits"


SNAP = {
    "stage": "infer", "kind": "infer", "pid": 7, "started_ns": 1, "now_ns": 2, "final": False,
    "counters": {"in": 3}, "drops": {}, "hists": {}, "first_out_ns": None, "last_out_ns": None,
    "info": {"seq_high": {"grab@1": 2}, "model": "us-seg"},  # `model`: a key the check leaves alone
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pid": True}, "pid: expected int, got bool"),
        ({"counters": {"in": -1}}, "counters.in: expected int >= 0"),
        ({"info": {"arrived": {"grab@1": [1, 2]}}}, "info.arrived.grab@1: expected array of length 3, got 2"),
        ({"info": {"sink_drops": {"rec": {"x": 1}, "igtl": {"ok": 1, "bad": "1"}}}},
         "info.sink_drops.igtl.bad: expected int, got str"),
        ({"info": {"confusion": [[1, 2]]}}, "info: confusion must be a square matrix of counts"),
        ({"info": {"labels": ["a", 1]}}, "info.labels[1]: expected str, got int"),
        ({"stage": "intruder"}, "unknown stage 'intruder'"),
    ],
)
def test_a_bad_snapshot_names_the_key(change: dict[str, Any], message: str) -> None:
    from stream.snapshot import parse_snapshot

    snap = {**SNAP, **change}
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        parse_snapshot(json.dumps(snap).encode(), {"infer"})
    assert parse_snapshot(json.dumps(SNAP).encode(), {"infer"}) == SNAP  # kept as sent


def test_the_stats_channel_needs_the_stage_clock() -> None:
    from stream.stats_relay import StatsMessageError, check_snapshot

    assert check_snapshot(SNAP) is SNAP
    with pytest.raises(StatsMessageError, match="^snapshot: missing key 'now_ns'$"):
        check_snapshot({k: v for k, v in SNAP.items() if k != "now_ns"})
