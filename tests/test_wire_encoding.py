"""The sender's encoding is pinned: for a set of frames (grey, colour, 16-bit big-endian, a
non-contiguous view, extra parts, annotations with boxes and track ids, trace, meta, shared
memory, eos) `encode_frame` / `encode_eos` give byte for byte the topic and header, and the
payload, recorded in tests/data/wire_encoding.json (written by the encoder of main bb172bc).
A change that speeds the encoder up must leave these bytes alone; one that changes the wire
on purpose regenerates the file (`python tests/test_wire_encoding.py --write`) and says why.

Every frame is encoded twice, so an encoder that remembers a layout is checked on its second
use as well as its first."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.codec import EndOfStream, encode_eos, encode_frame
from stream.frame import Annotations, Box, Frame, Span

GOLDEN = Path(__file__).parent / "data" / "wire_encoding.json"
T0 = 1_700_000_000_000_000_000


def _image(shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 251).astype(dtype).reshape(shape)


def _frame(image: np.ndarray, fmt: str = "gray8", **fields: Any) -> Frame:
    return Frame("us0", 41, T0, T0 + 50_000_000, image, fmt, 7, **fields)


def _tracked() -> Annotations:
    return Annotations(
        "det", ["bg", "tool"],
        [Box(1.5, 2, 30, 40, 1, 0.9), Box(np.float32(0.25), 0, 1, 1, np.int64(0), 1 / 3)],
        "onnxruntime", "cpu", "fp32", classes=[(1, 0.75), (0, 0.25)], track_ids=[3, -1],
    )


def _shm(buffers: list[np.ndarray]) -> dict[str, Any]:
    return {"ring": "grab-out", "slot": 3, "gen": 9, "sizes": [b.nbytes for b in buffers]}


# name -> (frame, shm writer); each built fresh (an encoder must not depend on object identity)
CASES: dict[str, Callable[[], tuple[Frame, Any]]] = {
    "gray8": lambda: (_frame(_image((6, 8))), None),
    "gray8_512": lambda: (Frame("bench", 3, T0, T0 + 10**12, _image((512, 512)), epoch=1), None),
    "bgr8": lambda: (_frame(_image((6, 8, 3)), "bgr8"), None),
    "gray16_big_endian": lambda: (_frame(_image((4, 5), ">u2"), "gray16"), None),
    "gray16": lambda: (_frame(_image((4, 5), "uint16"), "gray16"), None),
    "non_contiguous": lambda: (_frame(_image((12, 8))[::2, ::1]), None),
    "float32": lambda: (_frame(_image((2, 3, 4), "float32"), "float32"), None),
    "parts": lambda: (
        _frame(_image((6, 8)), parts={
            "mask": _image((6, 8)) % 3,
            "score": _image((2, 3), "float32") / 7,
            "truth": _image((6, 8), ">u2"),
        }),
        None,
    ),
    "annotations": lambda: (_frame(_image((6, 8)), annotations=_tracked()), None),
    "annotations_model_only": lambda: (_frame(_image((6, 8)), annotations=Annotations("det")), None),
    "annotations_empty_tuples": lambda: (
        _frame(_image((6, 8)), annotations=Annotations(labels=(), boxes=())),  # type: ignore[arg-type]
        None,
    ),
    "annotations_classes": lambda: (
        _frame(_image((6, 8)), annotations=Annotations("cls", ["a", "b"], classes=[(1, 0.5)])),
        None,
    ),
    "trace": lambda: (
        _frame(_image((6, 8)), trace=[Span("grab", 10, 20), Span("infer", 25, 40)]), None
    ),
    "meta": lambda: (
        _frame(_image((6, 8)), meta={"roi": {"x": 1, "y": [2, 3.5]}, "note": "é\n\"", "n": None}),
        None,
    ),
    "everything": lambda: (
        _frame(
            _image((6, 8, 3)), "bgr8", parts={"mask": _image((6, 8)) % 2},
            annotations=_tracked(), trace=[Span("grab", 1, 2)], meta={"k": [1, {"z": True}]},
        ),
        None,
    ),
    "shm": lambda: (_frame(_image((6, 8)), parts={"mask": _image((6, 8)) % 3}), _shm),
    "shm_full_inline": lambda: (_frame(_image((6, 8))), lambda buffers: None),
    "unicode_stream": lambda: (Frame("ün/1", 0, 0, 0, _image((1, 1))), None),
    "large_numbers": lambda: (
        Frame("s", 2**63 - 1, 2**63 - 2, 2**63 - 1, _image((2, 2)), epoch=2**62), None
    ),
}


def _encoded(name: str) -> dict[str, Any]:
    """What goes on the wire for case `name`: topic and header as text, payload hashes."""
    frame, shm = CASES[name]()
    parts = [bytes(memoryview(p).cast("B")) for p in encode_frame(frame, "grab", 5, T0 + 123, shm)]
    return {
        "topic": parts[0].decode(),
        "header": parts[1].decode(),
        "payload": [hashlib.sha256(p).hexdigest() for p in parts[2:]],
    }


def _eos() -> dict[str, Any]:
    topic, header = encode_eos(EndOfStream("us0", 7, 41), "grab", 5, T0 + 123)
    return {"topic": topic.decode(), "header": header.decode(), "payload": []}


def _all() -> dict[str, Any]:
    return {**{name: _encoded(name) for name in CASES}, "eos": _eos()}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_every_case_is_recorded(golden: dict[str, Any]) -> None:
    assert set(golden) == {*CASES, "eos"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frame_encodes_to_the_recorded_bytes(name: str, golden: dict[str, Any]) -> None:
    first, second = _encoded(name), _encoded(name)
    assert first == golden[name]
    assert second == golden[name]  # a remembered layout gives the same bytes


def test_eos_encodes_to_the_recorded_bytes(golden: dict[str, Any]) -> None:
    assert _eos() == golden["eos"]


def test_a_frame_after_another_layout_is_unchanged(golden: dict[str, Any]) -> None:
    """Interleaved layouts (one sender, several streams or formats) do not mix."""
    for name in ("gray8", "bgr8", "gray8_512", "gray16_big_endian", "gray16", "parts", "gray8"):
        assert _encoded(name) == golden[name]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(_all(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(CASES) + 1} cases to {GOLDEN}")
