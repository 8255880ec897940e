"""Wire protocol v1 headers as msgspec types: the schema both of the receiver's paths check a
header with, how a sender encodes it, and the fast path for headers in that exact encoding
(docs/protocol.md, section 3).

`decode_canonical` accepts a `frame` header only if re-encoding what msgspec decoded gives back
the very same bytes: such a header names no key twice (msgspec would keep the last of two, the
protocol refuses both), has no unknown keys and no spacing, so every check the schema states has
been made. Anything else (another producer's spacing or key order, an `eos`, an error of any
kind) returns None and `stream.codec` parses it with the standard library (which refuses
duplicate keys) and converts the result to these same types, naming the reason of a refusal.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

INT64_MAX = 2**63 - 1
MAX_PARTS = 8
MAX_NDIM = 4
MAX_DIM = 16384
MAX_TRACE_SPANS = 64
MAX_BOXES = 4096
MAX_LABELS = 256
MAX_CLASSES = 256  # annotations.classes: a classifier's top-k

Int = Annotated[int, Meta(ge=0, le=INT64_MAX)]
Text = Annotated[str, Meta(max_length=256)]
Coord = Annotated[float, Meta(ge=-1e15, le=1e15)]
DType = Literal[
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64"
]


class Part(msgspec.Struct, frozen=True):
    """One payload array's description; hashable, so the receiver caches what it checked of a
    frame's layout per (format, parts)."""

    name: Annotated[str, Meta(max_length=64)]
    dtype: DType
    shape: Annotated[
        tuple[Annotated[int, Meta(ge=1, le=MAX_DIM)], ...], Meta(min_length=1, max_length=MAX_NDIM)
    ]


class Ann(msgspec.Struct):
    model: Text = ""
    labels: Annotated[list[Text], Meta(max_length=MAX_LABELS)] = []
    boxes: Annotated[
        list[tuple[Coord, Coord, Coord, Coord, Annotated[int, Meta(ge=0, lt=2**31)], Coord]],
        Meta(max_length=MAX_BOXES),
    ] = []
    backend: Text = ""
    device: Text = ""
    precision: Text = ""
    # optional: absent when empty
    classes: (
        Annotated[
            list[tuple[Annotated[int, Meta(ge=0, le=255)], Annotated[float, Meta(ge=0.0, le=1.0)]]],
            Meta(max_length=MAX_CLASSES),
        ]
        | UnsetType
    ) = UNSET
    track_ids: list[Annotated[int, Meta(ge=-1, le=INT64_MAX)]] | UnsetType = UNSET


class Envelope(msgspec.Struct):
    """What every header starts with (section 3.1), in the order medstream senders write it."""

    v: Literal[1]
    kind: Literal["frame", "eos"]
    sender: Text
    link_seq: Int
    sent_ns: Int
    stream: Text
    epoch: Int


class FrameHeader(Envelope):
    """A `frame` header (section 3.2); keys in the order medstream senders write them."""

    kind: Literal["frame"]
    seq: Int
    capture_ns: Int
    deadline_ns: Int
    format: str
    parts: Annotated[tuple[Part, ...], Meta(min_length=1, max_length=MAX_PARTS)]
    annotations: Ann = msgspec.field(default_factory=Ann)
    trace: Annotated[list[tuple[Text, Int, Int]], Meta(max_length=MAX_TRACE_SPANS)] = []
    meta: dict[str, Any] = {}
    shm: dict[str, Any] | UnsetType = UNSET  # a shared-memory link's slot reference


class EosHeader(Envelope):
    """An `eos` header (section 3.4)."""

    kind: Literal["eos"]
    last_seq: Annotated[int, Meta(ge=-1, le=INT64_MAX)]


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(FrameHeader)


def encode(header: FrameHeader | EosHeader) -> bytes:
    """The header's bytes. A non-finite float (which msgspec writes as null) is a ValueError,
    as it is for the standard library's encoder with allow_nan=False."""
    head = _ENCODER.encode(header)
    if b"null" in head:  # rare: only then look for NaN / Infinity
        import json

        json.dumps(msgspec.to_builtins(header), allow_nan=False)
    return head


def decode_canonical(head: bytes | memoryview) -> FrameHeader | None:
    """The header if it is valid by the schema and in canonical encoding, else None."""
    try:
        header = _DECODER.decode(head)
    except (msgspec.MsgspecError, RecursionError):  # nested too deeply: the slow path says so
        return None
    return header if _ENCODER.encode(header) == head else None
