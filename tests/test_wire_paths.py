"""The header's two paths agree (docs/protocol.md, section 3): medstream's own encoding takes the
msgspec fast path, any other spacing or key order the stdlib json path, which converts to the
same msgspec types; valid headers decode alike, invalid ones are refused with the same reason
whatever their spacing, the slow path naming the key path in its detail."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from stream import wire_header
from stream.codec import (
    DecodeError,
    EndOfStream,
    _parse_canonical,
    _parse_json,
    decode,
    encode_eos,
    encode_frame,
    parse,
)
from stream.frame import Annotations, Box, Frame, Span


def _frame(fmt: str = "gray8", tracked: bool = False) -> Frame:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (6, 8) if fmt == "gray8" else (6, 8, 3), dtype=np.uint8)
    frame = Frame("us0", 41, 1_700_000_000_000_000_000, 1_700_000_000_050_000_000, image, fmt, 7)
    if tracked:
        frame.parts = {"mask": rng.integers(0, 3, (6, 8), dtype=np.uint8),
                       "score": rng.random((2, 3)).astype(np.float32)}
        frame.annotations = Annotations(
            "det", ["bg", "tool"], [Box(1.5, 2, 30, 40, 1, 0.9), Box(0, 0, 1, 1, 0, 0.25)],
            "onnxruntime", "cpu", "fp32", classes=[(1, 0.75), (0, 0.25)], track_ids=[3, -1],
        )
        frame.trace = [Span("grab", 10, 20), Span("infer", 25, 40)]
        frame.meta = {"roi": {"x": 1, "y": [2, 3]}, "note": "é", "n": None}
    return frame


def _message(frame: Frame) -> list[bytes]:
    return [bytes(memoryview(p)) for p in encode_frame(frame, "grab", 5, 123)]


def _canonical(h: dict) -> bytes:
    """Medstream's own spacing (the fast path's input when the header is valid)."""
    return json.dumps(h, separators=(",", ":"), ensure_ascii=False).encode()


def _reordered(value: Any) -> Any:
    """Every object's keys in reverse order, at every depth."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(value)}
    return [_reordered(v) for v in value] if isinstance(value, list) else value


def _other_producers(h: dict) -> list[bytes]:
    """The same header as other producers write it: spaced, indented and escaped, reordered."""
    return [json.dumps(h).encode(), json.dumps(h, indent=2).encode(),
            json.dumps(_reordered(h), separators=(", ", " : ")).encode()]


def _same_frame(a: Frame, b: Frame) -> None:
    for f in fields(Frame):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "image":
            assert x.dtype == y.dtype and np.array_equal(x, y)
        elif f.name == "parts":
            assert x.keys() == y.keys()
            assert all(x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]) for k in x)
        else:
            assert x == y, f.name


@pytest.mark.parametrize("frame", [_frame(), _frame("bgr8"), _frame(tracked=True)])
def test_other_spacing_and_key_order_decode_to_the_frame_the_fast_path_gives(frame: Frame) -> None:
    msg = _message(frame)
    fast = _parse_canonical(msg)
    assert fast is not None  # the sender's own bytes take the fast path
    want = decode(msg).frame
    assert want is not None
    _same_frame(want, frame)
    for head in _other_producers(json.loads(msg[1])):
        other = [msg[0], head, *msg[2:]]
        assert _parse_canonical(other) is None  # the slow path, then
        assert replace(parse(other), parts=[]) == replace(fast, parts=[])
        got = decode(other).frame
        assert got is not None
        _same_frame(got, want)


def test_integers_where_floats_go_decode_as_the_floats_a_sender_writes() -> None:
    """Another producer may write a box's coordinates or a probability as JSON integers: the
    slow path gives the same floats the fast path gives for medstream's `1.0`, and the header
    the schema makes of them is canonical, so the fast path takes it as it is."""
    frame = _frame(tracked=True)
    frame.annotations.boxes = [Box(1.0, 2.0, 30.0, 40.0, 1, 1.0), Box(0.0, 0.0, 1.0, 1.0, 0, 0.0)]
    frame.annotations.classes = [(1, 1.0)]
    msg = _message(frame)
    h = json.loads(msg[1])
    h["annotations"]["boxes"] = [[1, 2, 30, 40, 1, 1], [0, 0, 1, 1, 0, 0]]
    h["annotations"]["classes"] = [[1, 1]]
    ints = [msg[0], json.dumps(h).encode(), *msg[2:]]
    got = decode(ints).frame
    assert got is not None
    assert all(type(v) is float for b in got.annotations.boxes for v in (b.x0, b.y1, b.score))
    assert type(got.annotations.classes[0][1]) is float
    want = decode(msg).frame
    assert want is not None
    _same_frame(got, want)
    typed = msgspec.convert(h, wire_header.FrameHeader)
    assert wire_header.encode(typed) == msg[1]  # one canonical form for both
    assert _parse_canonical([msg[0], wire_header.encode(typed), *msg[2:]]) is not None


Change = Callable[[dict], None]


def _set(path: str, value: Any) -> Change:
    """A change that sets the dotted `path` (`parts.0.shape`) of a header to `value`."""
    *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(h: dict) -> None:
        for k in keys:
            h = h[k]
        h[last] = value

    return change


def _delete(path: str) -> Change:
    *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(h: dict) -> None:
        for k in keys:
            h = h[k]
        del h[last]

    return change


def _deep(depth: int) -> dict:
    deep: dict = {}
    for _ in range(depth):
        deep = {"d": deep}
    return deep


# (change, reason, what the slow path's detail names); each header has one fault only
INVALID: dict[str, tuple[Change, str, str]] = {
    "version": (_set("v", 2), "version", "$.v"),
    "version_bool": (_set("v", True), "version", "$.v"),
    "kind": (_set("kind", "pickle"), "kind", "$.kind"),
    "negative": (_set("seq", -1), "field", "$.seq"),
    "bool_int": (_set("capture_ns", True), "field", "$.capture_ns"),
    "float_int": (_set("epoch", 7.0), "field", "$.epoch"),
    "int64": (_set("link_seq", 2**63), "field", "$.link_seq"),
    "long_text": (_set("sender", "x" * 257), "field", "$.sender"),
    "missing": (_delete("deadline_ns"), "field", "`deadline_ns`"),
    "format_null": (_set("format", None), "pixel_format", "$.format"),
    "format_missing": (_delete("format"), "pixel_format", "`format`"),
    "format_unknown": (_set("format", "rgb48"), "pixel_format", "$.format"),
    "dtype": (_set("parts.0.dtype", "object"), "dtype", "$.parts[0].dtype"),
    "dtype_list": (_set("parts.1.dtype", ["uint8"]), "dtype", "$.parts[1].dtype"),
    "dtype_missing": (_delete("parts.1.dtype"), "dtype", "$.parts[1]"),
    "shape_dim": (_set("parts.0.shape.0", 16385), "shape", "$.parts[0].shape[0]"),
    "shape_empty": (_set("parts.2.shape", []), "shape", "$.parts[2].shape"),
    "part_name": (_set("parts.0.name", "img"), "field", "$.parts[0].name"),
    "part_name_twice": (_set("parts.2.name", "mask"), "field", "$.parts[2].name"),
    "no_parts": (_set("parts", []), "parts", "$.parts"),
    "box_label": (_set("annotations.boxes.0.4", 1.5), "field", "$.annotations.boxes[0][4]"),
    "box_coord": (_set("annotations.boxes.1.0", 1e16), "field", "$.annotations.boxes[1][0]"),
    "box_short": (_set("annotations.boxes.0", [1, 2, 3]), "field", "$.annotations.boxes[0]"),
    "label": (_set("annotations.labels.1", 5), "field", "$.annotations.labels[1]"),
    "class": (_set("annotations.classes.0.0", 256), "field", "$.annotations.classes[0][0]"),
    "probability": (_set("annotations.classes.1.1", 1.5), "field", "$.annotations.classes[1][1]"),
    "track_id": (_set("annotations.track_ids.1", -2), "field", "$.annotations.track_ids[1]"),
    "track_ids_count": (_set("annotations.track_ids", [1]), "field", "$.annotations.track_ids"),
    "span": (_set("trace.0.1", -1), "field", "$.trace[0][1]"),
    "meta_list": (_set("meta", []), "field", "$.meta"),
    "meta_deep": (_set("meta", _deep(9)), "field", "$.meta"),
    "shm_null": (_set("shm", None), "shm", "$.shm"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_an_invalid_header_is_refused_with_one_reason_in_any_spacing(name: str) -> None:
    change, reason, named = INVALID[name]
    msg = _message(_frame(tracked=True))
    h = json.loads(msg[1])
    change(h)
    for head in (_canonical(h), *_other_producers(h)):
        bad = [msg[0], head, *msg[2:]]
        assert _parse_canonical(bad) is None  # nothing invalid passes the fast path
        with pytest.raises(DecodeError) as err:
            decode(bad)
        assert err.value.reason == reason, head
        assert named in err.value.detail, err.value.detail


@pytest.mark.parametrize(
    "change, named",
    [(_set("last_seq", -2), "$.last_seq"), (_set("epoch", "7"), "$.epoch"),
     (_delete("sender"), "`sender`"), (_set("kind", "frame"), "`seq`")],
    ids=["last_seq", "epoch_text", "no_sender", "frame_kind"],
)
def test_an_invalid_eos_is_refused_by_the_eos_schema(change: Change, named: str) -> None:
    msg = encode_eos(EndOfStream("us0", 7, 99), "grab", 12, 5)
    h = json.loads(msg[1])
    assert msg[1] == _canonical(h)  # written as medstream writes every header
    change(h)
    for head in (_canonical(h), *_other_producers(h)):
        with pytest.raises(DecodeError) as err:
            decode([msg[0], head])
        assert err.value.reason == "field" and named in err.value.detail, err.value.detail


def test_the_topic_is_checked_after_the_common_keys_and_before_the_frame_keys() -> None:
    """docs/protocol.md, section 5: the keys of section 3.1, then the topic, then the rest."""
    msg = _message(_frame())
    for key, value, reason in (("seq", -1, "topic"), ("epoch", -1, "field")):
        h = json.loads(msg[1])
        h[key] = value
        with pytest.raises(DecodeError) as err:
            decode([b"other", json.dumps(h).encode(), *msg[2:]])
        assert err.value.reason == reason, key


def test_a_number_too_large_for_a_double_is_not_json_on_either_path() -> None:
    """msgspec refuses `1e400`; the standard library would read it as infinity, which no
    sender can write back: both refuse it, wherever it is."""
    msg = _message(_frame(tracked=True))
    for head in (msg[1].replace(b'"meta":{', b'"meta":{"x":1e400,', 1),
                 msg[1].replace(b'"boxes":[[1.5', b'"boxes":[[-1e400', 1)):
        assert head != msg[1]
        bad = [msg[0], head, *msg[2:]]
        assert _parse_canonical(bad) is None
        with pytest.raises(DecodeError) as err:
            decode(bad)
        assert err.value.reason == "header_json"


NUMBER = st.one_of(
    st.integers(-2, 2**64), st.floats(-1e16, 1e16, allow_nan=False), st.sampled_from([1e300, -0.0])
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBER | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
CHANGES = st.fixed_dictionaries({}, optional={
    "seq": NUMBER,
    "extra": JSON,
    "meta": st.dictionaries(st.text(max_size=4), JSON, max_size=3),
    "trace": st.lists(st.tuples(st.text(max_size=3), NUMBER, NUMBER).map(list), max_size=2),
    "annotations": st.fixed_dictionaries({}, optional={
        "labels": st.lists(st.text(max_size=3), max_size=2),
        "boxes": st.lists(st.lists(NUMBER, min_size=6, max_size=6), max_size=2),
        "classes": st.lists(st.tuples(NUMBER, NUMBER).map(list), max_size=2),
        "track_ids": st.lists(NUMBER, max_size=2),
        "model": JSON,
    }),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=CHANGES)
def test_what_the_slow_path_accepts_the_fast_path_takes_in_canonical_form(changes: dict) -> None:
    """The other direction of tests/test_fuzz.py's check: a header the slow path accepts,
    written as a medstream sender writes its schema value, takes the fast path to the same
    result, so the two accept the same headers."""
    msg = _message(_frame(tracked=True))
    h = json.loads(msg[1])
    h.update(changes)
    parts = [msg[0], json.dumps(h).encode(), *msg[2:]]
    try:
        slow = _parse_json(parts)
    except DecodeError:
        return
    canonical = wire_header.encode(msgspec.convert(h, wire_header.FrameHeader))
    fast = _parse_canonical([msg[0], canonical, *msg[2:]])
    assert fast is not None
    assert replace(fast, parts=[]) == replace(slow, parts=[])
