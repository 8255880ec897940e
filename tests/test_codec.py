"""Wire protocol v1: round trip, zero copy, and every rejection reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream.codec import (
    MAX_DIM,
    MAX_HEADER_BYTES,
    REJECT_REASONS,
    DecodeError,
    EndOfStream,
    decode,
    encode_eos,
    encode_frame,
)
from stream.frame import Annotations, Box, Frame, Span


def make_frame(fmt: str = "gray8") -> Frame:
    rng = np.random.default_rng(1)
    shape = (48, 64) if fmt == "gray8" else (48, 64, 3)
    return Frame(
        stream="us0",
        seq=41,
        capture_ns=1_700_000_000_000_000_000,
        deadline_ns=1_700_000_000_050_000_000,
        image=rng.integers(0, 256, shape, dtype=np.uint8),
        pixel_format=fmt,
        epoch=7,
        parts={
            "mask": rng.integers(0, 4, (48, 64), dtype=np.uint8),
            "score": rng.random((2, 3)).astype(np.float32),
        },
        annotations=Annotations(
            model="us-seg",
            labels=["background", "anechoic"],
            boxes=[Box(1.5, 2, 30, 40, 1, 0.9)],
            backend="onnxruntime",
            device="cpu",
            precision="fp32",
        ),
        trace=[Span("grab", 10, 20), Span("infer", 25, 40)],
        meta={"pixel_spacing_mm": [0.1, 0.1]},
    )


def header_of(parts: list) -> dict:
    return json.loads(bytes(parts[1]))


def with_header(msg: list, **changes) -> list:
    h = header_of(msg)
    h.update(changes)
    return [msg[0], json.dumps(h).encode(), *msg[2:]]


@pytest.mark.parametrize("fmt", ["gray8", "bgr8"])
def test_round_trip(fmt: str) -> None:
    f = make_frame(fmt)
    msg = decode([bytes(memoryview(p)) for p in encode_frame(f, "grab", 5, 123)])
    assert msg.kind == "frame" and msg.sender == "grab" and msg.link_seq == 5 and msg.sent_ns == 123
    g = msg.frame
    assert g is not None
    assert (g.stream, g.seq, g.epoch, g.capture_ns, g.deadline_ns) == (
        f.stream,
        f.seq,
        f.epoch,
        f.capture_ns,
        f.deadline_ns,
    )
    assert g.pixel_format == fmt
    np.testing.assert_array_equal(g.image, f.image)
    assert set(g.parts) == {"mask", "score"}
    np.testing.assert_array_equal(g.parts["score"], f.parts["score"])
    assert g.parts["score"].dtype == np.float32
    assert g.annotations == f.annotations
    assert g.trace == f.trace
    assert g.meta == f.meta


def test_encode_is_zero_copy_and_decode_is_a_view() -> None:
    f = make_frame()
    parts = encode_frame(f, "grab", 1, 1)
    assert np.shares_memory(parts[2], f.image)  # the image buffer goes out as it is
    received = [bytes(p) if i < 2 else bytearray(memoryview(p)) for i, p in enumerate(parts)]
    g = decode(received).frame
    assert g is not None
    assert np.shares_memory(g.image, np.frombuffer(received[2], np.uint8))
    received[2][0] ^= 0xFF  # a view: the change shows through
    assert g.image.flat[0] == received[2][0]


def test_non_contiguous_and_big_endian_arrays_are_normalised() -> None:
    f = make_frame()
    f.image = np.asfortranarray(f.image)
    f.parts = {"be": np.arange(6, dtype=">u2").reshape(2, 3)}
    g = decode(encode_frame(f, "s", 1, 1)).frame
    assert g is not None
    np.testing.assert_array_equal(g.image, f.image)
    np.testing.assert_array_equal(g.parts["be"], np.arange(6).reshape(2, 3))


def test_eos_round_trip() -> None:
    msg = decode(encode_eos(EndOfStream("us0", 7, 99), "grab", 12, 5))
    assert msg.kind == "eos" and msg.eos == EndOfStream("us0", 7, 99) and msg.link_seq == 12


def test_unsendable_dtype_is_refused_at_encode() -> None:
    f = make_frame()
    f.parts = {"c": np.zeros(3, np.complex64)}
    with pytest.raises(TypeError, match="complex64"):
        encode_frame(f, "s", 1, 1)


def _cases() -> dict[str, list]:
    good = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 1, 1)]
    h = header_of(good)
    bad_parts = dict(h, parts=[{"name": "image", "dtype": "uint8", "shape": [48, 64]}])
    return {
        "parts": [good[0]],
        "topic": [b"other", *good[1:]],
        "header_size": [good[0], b" " * (MAX_HEADER_BYTES + 1), *good[2:]],
        "header_utf8": [good[0], b"\xff\xfe{", *good[2:]],
        "header_json": [good[0], b"[" * 100_00 + b"]" * 100_00, *good[2:]],
        "duplicate_key": [good[0], good[1].replace(b'"seq":', b'"seq":0,"seq":', 1), *good[2:]],
        "version": with_header(good, v=2),
        "kind": with_header(good, kind="pickle"),
        "field": with_header(good, seq=-1),
        "dtype": with_header(good, parts=[dict(h["parts"][0], dtype="object"), *h["parts"][1:]]),
        "shape": with_header(
            good, parts=[dict(h["parts"][0], shape=[MAX_DIM + 1, 2]), *h["parts"][1:]]
        ),
        "size": [good[0], good[1], good[2][:-1], *good[3:]],
        "pixel_format": with_header(good, format="bgr8"),
        "shm": with_header(good[:2], shm={"ring": "medstream-1-x-00000000", "slot": 0}),
        "_count": [good[0], json.dumps(bad_parts).encode(), *good[2:]],
    }


@pytest.mark.parametrize("reason", REJECT_REASONS)
def test_every_rejection_reason(reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(_cases()[reason])
    assert err.value.reason == reason


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    """Parsers disagree on which of two equal keys wins, so none is chosen: the message is
    refused, whether the duplicate is at the top or inside `meta`."""
    good = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 1, 1)]
    nested = good[1].replace(b'"meta":{', b'"meta":{"a":1,"a":2,', 1)
    assert nested != good[1]
    for head in (good[1].replace(b'"link_seq":', b'"link_seq":9,"link_seq":', 1), nested):
        with pytest.raises(DecodeError) as err:
            decode([good[0], head, *good[2:]])
        assert err.value.reason == "duplicate_key"


def test_a_null_or_missing_format_is_a_pixel_format_rejection() -> None:
    good = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 1, 1)]
    h = header_of(good)
    del h["format"]
    for parts in (with_header(good, format=None), [good[0], json.dumps(h).encode(), *good[2:]]):
        with pytest.raises(DecodeError) as err:
            decode(parts)
        assert err.value.reason == "pixel_format"


@pytest.mark.parametrize(
    "change",
    [
        {"seq": True},
        {"capture_ns": "1"},
        {"stream": 5},
        {"annotations": {"boxes": [[1, 2, 3]]}},
        {"annotations": {"labels": [1]}},
        {"trace": [["grab", -1, 2]]},
        {"meta": []},
        {"parts": [{"name": "mask", "dtype": "uint8", "shape": [48, 64]}]},
    ],
)
def test_bad_fields_are_rejected_as_field_or_parts(change: dict) -> None:
    good = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 1, 1)]
    with pytest.raises(DecodeError) as err:
        decode(with_header(good, **change))
    assert err.value.reason in ("field", "parts")


def test_part_count_mismatch_is_parts() -> None:
    with pytest.raises(DecodeError) as err:
        decode(_cases()["_count"])
    assert err.value.reason == "parts"


def test_huge_declared_shape_is_rejected_before_allocation() -> None:
    good = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 1, 1)]
    h = header_of(good)
    huge = dict(h["parts"][0], shape=[MAX_DIM, MAX_DIM, 4, 4])
    with pytest.raises(DecodeError) as err:
        decode(with_header(good, parts=[huge, *h["parts"][1:]]))
    assert err.value.reason == "size"


def test_shm_hooks_carry_the_payload_out_of_band() -> None:
    """With an shm writer the message is only topic + header; the reader hands the bytes back."""
    f = make_frame()
    stored: dict[str, list[bytes]] = {}

    def write(buffers: list[np.ndarray]) -> dict:
        stored["parts"] = [bytes(memoryview(b).cast("B")) for b in buffers]
        return {"ref": 1}

    def read(ref: dict, sizes: list[int]) -> list[bytes]:
        assert ref == {"ref": 1}
        assert sizes == [len(b) for b in stored["parts"]]
        return stored["parts"]

    parts = encode_frame(f, "grab", 1, 1, shm_writer=write)
    assert len(parts) == 2 and header_of(parts)["shm"] == {"ref": 1}
    g = decode(parts, shm_reader=read).frame
    assert g is not None
    np.testing.assert_array_equal(g.image, f.image)
    np.testing.assert_array_equal(g.parts["score"], f.parts["score"])
    inline = encode_frame(f, "grab", 1, 1, shm_writer=lambda buffers: None)  # no slot: inline
    assert len(inline) == 5 and "shm" not in header_of(inline)
    with pytest.raises(DecodeError) as err:  # payload both inline and in shared memory
        decode([*parts, b"x"], shm_reader=read)
    assert err.value.reason == "parts"


FRAME_REQUIRED = {
    "v": "version", "kind": "kind", "stream": "field", "sender": "field", "link_seq": "field",
    "sent_ns": "field", "epoch": "field", "seq": "field", "capture_ns": "field",
    "deadline_ns": "field", "format": "pixel_format", "parts": "field",
}
FRAME_OPTIONAL = ("annotations", "trace", "meta")


def test_required_header_keys_are_those_protocol_md_names() -> None:
    """docs/protocol.md section 3: these keys are required (each missing one is refused with
    the reason given), the rest optional; the table in the doc lists exactly these."""
    good = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 1, 1)]
    for key, reason in FRAME_REQUIRED.items():
        h = header_of(good)
        del h[key]
        with pytest.raises(DecodeError) as err:
            decode([good[0], json.dumps(h).encode(), *good[2:]])
        assert err.value.reason == reason, key
    h = header_of(good)
    for key in FRAME_OPTIONAL:
        del h[key]
    assert decode([good[0], json.dumps(h).encode(), *good[2:]]).frame is not None
    eos = header_of(encode_eos(EndOfStream("s", 1, 0), "grab", 1, 1))
    del eos["last_seq"]
    with pytest.raises(DecodeError):
        decode([b"s", json.dumps(eos).encode()])
    doc = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    section = doc[doc.index("### 3.0 Required keys") : doc.index("### 3.1")]
    for key in FRAME_REQUIRED:
        assert f"`{key}`" in section, key


@pytest.mark.parametrize("key", ["link_seq", "sent_ns", "epoch", "seq", "capture_ns", "deadline_ns"])
def test_integers_are_bounded_to_int64(key: str) -> None:
    good = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 1, 1)]
    assert decode(with_header(good, **{key: 2**63 - 1})).frame is not None
    for bad in (2**63, -1):
        with pytest.raises(DecodeError) as err:
            decode(with_header(good, **{key: bad}))
        assert err.value.reason == "field"


def canonical(h: dict) -> bytes:
    """A header dict in medstream's own encoding (no spaces, keys in the sender's order)."""
    return json.dumps(h, separators=(",", ":")).encode()


def tracked_frame() -> Frame:
    f = make_frame()
    f.annotations.classes = [(1, 0.75), (0, 0.25)]
    f.annotations.track_ids = [3]
    f.meta = {"roi": {"x": 1, "y": 2}, "note": "é", "n": None}
    return f


@pytest.mark.parametrize("frame", [make_frame(), make_frame("bgr8"), tracked_frame()])
def test_the_msgspec_fast_path_and_the_json_path_parse_a_header_alike(frame: Frame) -> None:
    from stream.codec import _parse_canonical, _parse_json

    parts = [bytes(memoryview(p)) for p in encode_frame(frame, "grab", 5, 123)]
    fast = _parse_canonical(parts)
    assert fast is not None  # medstream's own encoding takes the fast path
    assert fast == _parse_json(parts)
    assert _parse_canonical([parts[0], canonical(header_of(parts)).replace(b",", b", ", 1), *parts[2:]]) is None


def _canonical_case(name: str) -> tuple[list, str]:
    msg = [bytes(memoryview(p)) for p in encode_frame(make_frame(), "grab", 5, 123)]
    h = header_of(msg)
    topic, rest = msg[0], msg[2:]
    if name == "duplicate_key":
        head = canonical(h)[:-1] + b',"seq":42}'
        return [topic, head, *rest], "duplicate_key"
    if name == "topic":
        return [b"other", canonical(h), *rest], "topic"
    if name == "size":
        return [topic, canonical(h), rest[0][:-1], *rest[1:]], "size"
    if name == "parts":
        return [topic, canonical(h), *rest[:-1]], "parts"
    if name == "pixel_format":
        h["format"] = "bgr8"  # a 2-D image is not bgr8
        return [topic, canonical(h), *rest], "pixel_format"
    if name == "track_ids":
        h["annotations"]["track_ids"] = [1, 2]  # one box
        return [topic, canonical(h), *rest], "field"
    if name == "meta":
        deep: dict = {}
        for _ in range(9):
            deep = {"d": deep}
        h["meta"] = deep
        return [topic, canonical(h), *rest], "field"
    assert name == "image_name"
    h["parts"][0]["name"] = "img"
    return [topic, canonical(h), *rest], "field"


@pytest.mark.parametrize(
    "name",
    ["duplicate_key", "topic", "size", "parts", "pixel_format", "track_ids", "meta", "image_name"],
)
def test_a_canonical_header_that_is_invalid_is_refused_with_its_reason(name: str) -> None:
    msg, reason = _canonical_case(name)
    with pytest.raises(DecodeError) as e:
        decode(msg)
    assert e.value.reason == reason


def test_a_layout_seen_valid_before_does_not_let_an_invalid_message_through() -> None:
    """The fast path remembers checked (format, parts) layouts: a message with a remembered
    layout but the wrong payload (or another format) is still refused with its reason."""
    valid = encode_frame(make_frame(), "grab", 5, 123)
    names = ["size", "parts", "pixel_format", "track_ids", "meta", "image_name", "topic"]
    for _ in range(2):
        for name in names:
            assert decode(valid).frame is not None  # its layout is remembered now
            msg, reason = _canonical_case(name)
            with pytest.raises(DecodeError) as e:
                decode(msg)
            assert e.value.reason == reason, name
