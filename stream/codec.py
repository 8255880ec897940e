"""Wire protocol v1: pure encode/decode between `Frame` and a ZeroMQ multipart message.

Message = [topic, header, part_0, part_1, ...]
  topic   UTF-8 stream id (pub/sub filters on it)
  header  UTF-8 JSON object (see docs/protocol.md), at most MAX_HEADER_BYTES
  part_i  raw little-endian C-order array bytes, described by header["parts"][i]

Encoding hands numpy buffers to ZeroMQ as they are; decoding wraps the received buffers with
`np.frombuffer` (read-only views, no copy). Decoding validates everything before it trusts a
byte and raises `DecodeError` with a short reason name that stages count as a drop reason.

On a shared-memory link (docs/protocol.md, section 8) the payload is not in the message: the
header's `shm` object names a ring slot, written by `shm_writer` and resolved by `shm_reader`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, get_args

import msgspec
import numpy as np

from engines.pixels import PIXEL_FORMATS

from . import wire_header
from .frame import Annotations, Box, Frame, Span
from .wire_header import MAX_DIM as MAX_DIM  # the schema's limits, exported here too
from .wire_header import MAX_PARTS, UNSET, Ann, DType, Envelope, EosHeader, FrameHeader, Part

PROTOCOL_VERSION: Final = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_PART_BYTES = 512 * 1024 * 1024
MAX_META_DEPTH = 8  # nesting of objects/arrays inside `meta`
MAX_TOPIC_BYTES = 1024

# dtype name on the wire -> numpy dtype (always little-endian)
DTYPES: dict[str, np.dtype] = {name: np.dtype(name).newbyteorder("<") for name in get_args(DType)}

KIND_FRAME = "frame"
KIND_EOS = "eos"

# Every reason `decode` can reject a message with; stages count drops under "invalid:<reason>".
REJECT_REASONS = (
    "parts",  # wrong number of message parts
    "topic",  # topic not UTF-8 or does not match the header's stream id
    "header_size",  # header larger than MAX_HEADER_BYTES
    "header_utf8",  # header not UTF-8
    "header_json",  # header not a JSON object (nested too deeply, NaN/Infinity, huge numbers)
    "duplicate_key",  # a JSON object of the header names one key twice
    "version",  # unsupported protocol version
    "kind",  # unknown message kind
    "field",  # a required field missing or of the wrong type / range
    "dtype",  # unknown dtype name
    "shape",  # shape not a list of 1..MAX_NDIM dimensions of 1..MAX_DIM
    "size",  # a payload buffer's length does not match its shape and dtype
    "pixel_format",  # unknown pixel format, or image shape not matching it
    "shm",  # a shared-memory reference that is malformed or names no usable ring
)

# shm_writer(buffers) -> the header's "shm" reference, or None to send the buffers inline
ShmWriter = Callable[[list[np.ndarray]], "dict[str, Any] | None"]
# shm_reader(reference, part sizes) -> one byte buffer per part (raises DecodeError("shm", ...))
ShmReader = Callable[[Any, list[int]], list[Any]]


class DecodeError(ValueError):
    """A message that is not valid protocol v1. `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in REJECT_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PayloadGone(Exception):
    """A valid frame whose out-of-band payload (a shared-memory slot) was reused before it
    could be read: a counted drop (`reason`), not an invalid message. Carries the header's
    link bookkeeping so the receiver does not count the frame again as a sequence gap."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.sender = ""
        self.link_seq = 0
        self.stream = ""
        self.epoch = 0
        self.seq = 0


@dataclass
class EndOfStream:
    """Sent by a stage when it stops: `last_seq` is the last sequence number of `stream`."""

    stream: str
    epoch: int
    last_seq: int


class Message(msgspec.Struct):
    """A decoded message: a frame or an end-of-stream marker, with its link bookkeeping. (A
    msgspec struct: made in C, once per frame a receiver hands on.)"""

    kind: str
    sender: str
    link_seq: int
    sent_ns: int
    frame: Frame | None = None
    eos: EndOfStream | None = None


def _array_bytes(arr: np.ndarray) -> np.ndarray:
    """Return a C-contiguous little-endian view (or copy, if it must) of `arr`."""
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}  # (`dtype.name` is slow)


def _dtype_name(arr: np.ndarray) -> str:
    """The wire name of a little-endian array's dtype (or a TypeError)."""
    name = _DTYPE_NAMES.get(arr.dtype)
    if name is None:
        raise TypeError(f"dtype {arr.dtype.name} cannot be sent; allowed: {', '.join(DTYPES)}")
    return name


# (dtype, shape) of an image sent alone -> its `parts` descriptor: a stream's layout repeats
# frame after frame, and looking it up costs less than building it (a sender's per-frame cost)
_IMAGE_PARTS: dict[tuple[np.dtype, tuple[int, ...]], tuple[Part, ...]] = {}
MAX_IMAGE_PARTS = 64  # layouts remembered (all forgotten when full)


def _payload(frame: Frame) -> tuple[list[np.ndarray], tuple[Part, ...]]:
    """The frame's arrays as they go on the wire (C-contiguous, little-endian) and their
    descriptors, the image first."""
    image = frame.image
    if len(frame.parts) >= MAX_PARTS:
        raise ValueError(f"a frame carries at most {MAX_PARTS} arrays, got {1 + len(frame.parts)}")
    buffers = [_array_bytes(image)]
    for arr in frame.parts.values():
        buffers.append(_array_bytes(arr))
    descs = tuple(
        Part(name, _dtype_name(buf), buf.shape)  # type: ignore[arg-type]  # a DTYPES name
        for name, buf in zip(("image", *frame.parts), buffers, strict=True)
    )
    if not frame.parts and image.dtype in _DTYPE_NAMES:  # as sent, without a byte swap
        if len(_IMAGE_PARTS) >= MAX_IMAGE_PARTS:
            _IMAGE_PARTS.clear()
        _IMAGE_PARTS[(image.dtype, image.shape)] = descs
    return buffers, descs


def encode_frame(
    frame: Frame, sender: str, link_seq: int, sent_ns: int, shm_writer: ShmWriter | None = None
) -> list[Any]:
    """Encode `frame` into message parts. Arrays are passed through without copying, or copied
    into shared memory by `shm_writer` (the message then carries only topic and header)."""
    image = frame.image
    descs = None if frame.parts else _IMAGE_PARTS.get((image.dtype, image.shape))
    if descs is not None:  # an image alone, a layout seen before: only contiguity to ensure
        buffers = [np.ascontiguousarray(image)]  # (inlined: a call less on every frame)
    else:
        buffers, descs = _payload(frame)
    shm = shm_writer(buffers) if shm_writer is not None else None
    ann = frame.annotations
    header = FrameHeader(  # positional: the schema's field order (keywords cost a frame's time)
        PROTOCOL_VERSION,
        "frame",
        sender,
        link_seq,
        sent_ns,
        frame.stream,
        frame.epoch,
        frame.seq,
        frame.capture_ns,
        frame.deadline_ns,
        frame.pixel_format,
        descs,
        _NO_ANN if ann == _NO_ANNOTATIONS else _annotations_header(ann),
        [(s.stage, s.start_ns, s.end_ns) for s in frame.trace] if frame.trace else [],
        frame.meta,
        UNSET if shm is None else shm,
    )
    head = wire_header.encode(header)
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    topic = frame.stream.encode()
    return [topic, head] if shm is not None else [topic, head, *buffers]


_NO_ANNOTATIONS = Annotations()  # no annotations, and their wire form, shared by every
_NO_ANN = Ann()  # frame without annotations (never changed)


def _annotations_header(ann: Annotations) -> Ann:
    """The wire form of `ann`: numbers as the receiver reads them (float coordinates, integer
    labels), so the header is in the canonical encoding (`wire_header.decode_canonical`)."""
    if ann.track_ids and len(ann.track_ids) != len(ann.boxes):
        raise ValueError(f"{len(ann.track_ids)} track ids for {len(ann.boxes)} boxes: one per box")
    return Ann(
        model=ann.model,
        labels=ann.labels,
        boxes=[
            (float(b.x0), float(b.y0), float(b.x1), float(b.y1), int(b.label), float(b.score))
            for b in ann.boxes
        ],
        backend=ann.backend,
        device=ann.device,
        precision=ann.precision,
        # optional (absent when empty), so a receiver that predates them still decodes
        classes=[(int(k), float(p)) for k, p in ann.classes] if ann.classes else UNSET,
        track_ids=[int(i) for i in ann.track_ids] if ann.track_ids else UNSET,  # section 3.3
    )


def encode_eos(eos: EndOfStream, sender: str, link_seq: int, sent_ns: int) -> list[bytes]:
    """Encode an end-of-stream marker (no payload parts)."""
    header = EosHeader(
        PROTOCOL_VERSION, "eos", sender, link_seq, sent_ns, eos.stream, eos.epoch, eos.last_seq
    )
    return [eos.stream.encode(), wire_header.encode(header)]


def _buffer(part: Any) -> memoryview:
    """A zero-copy view of one received part (bytes, zmq.Frame, memoryview, ndarray). A
    zmq.Frame has the buffer protocol itself (its `buffer` property is slower: a frame's cost)."""
    return memoryview(part).cast("B")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent; one too large for a double (`1e400`, which
    msgspec refuses too) is an error, not infinity."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text:.40} out of range")
    return value


def _meta_depth_ok(value: Any) -> bool:
    """True if `value` nests objects/arrays at most MAX_META_DEPTH deep (iterative walk)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth >= MAX_META_DEPTH:
                return False
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return True


Layout = tuple[str, np.dtype, tuple[int, ...], int]  # a part's name, dtype, shape, bytes


class Parsed(msgspec.Struct):
    """A message whose header is validated but whose payload is not bound yet (`bind`): a live
    receiver parses every message for its bookkeeping (read from `header`) and builds the
    `Frame` only of the one it hands on. (A msgspec struct: made in C, once per message.)"""

    kind: str
    header: FrameHeader | EosHeader
    parts: list[Any] | tuple[Any, ...]
    layouts: tuple[Layout, ...] = ()  # a frame's: one per part


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"key {key!r:.40} appears twice in one object")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates
)


def _parse_header(raw: Any) -> dict[str, Any]:
    head = _buffer(raw)
    if len(head) > MAX_HEADER_BYTES:
        raise DecodeError("header_size", f"{len(head)} bytes > {MAX_HEADER_BYTES}")
    try:
        text = str(head, "utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError("header_utf8", str(e)) from None
    try:
        header = _DECODER.decode(text)
    except _DuplicateKey as e:
        raise DecodeError("duplicate_key", str(e)) from None
    except (ValueError, RecursionError) as e:
        raise DecodeError("header_json", f"{type(e).__name__}: {str(e)[:80]}") from None
    if not isinstance(header, dict):
        raise DecodeError("header_json", "header is not a JSON object")
    return header


def parse(parts: list[Any]) -> Parsed:
    """Validate a multipart message's topic and header (everything but the payload bytes).
    Raises `DecodeError` on anything invalid."""
    if not isinstance(parts, (list, tuple)):
        raise DecodeError("parts", f"expected a list of message parts, got {type(parts).__name__}")
    if not 2 <= len(parts) <= 2 + MAX_PARTS:
        raise DecodeError("parts", f"expected 2..{2 + MAX_PARTS} parts, got {len(parts)}")
    fast = _parse_canonical(parts)
    return fast if fast is not None else _parse_json(parts)


def _parse_canonical(parts: list[Any] | tuple[Any, ...]) -> Parsed | None:
    """The fast path: a `frame` header in medstream's own encoding, checked by its msgspec
    schema (`wire_header`) and then as `_parse_json` checks it. None for anything else, valid
    or not: `_parse_json` then parses it and names the reason of a refusal."""
    head = memoryview(parts[1]).cast("B")  # `_buffer`, inlined here and in `_frame`: per message
    h = wire_header.decode_canonical(head) if len(head) <= MAX_HEADER_BYTES else None
    if h is None:
        return None
    if memoryview(parts[0]).cast("B") != h.stream.encode():  # (its length is valid if equal)
        return None
    try:
        return _frame(h, parts)
    except DecodeError:
        return None


def _frame(h: FrameHeader, parts: list[Any] | tuple[Any, ...]) -> Parsed:
    """The `Parsed` frame of a header valid by the schema, after the checks the schema cannot
    state (both paths): part count, layouts against the pixel format, sizes, meta depth, one
    track id per box. Raises `DecodeError`."""
    inline = len(parts) - 2
    if h.shm is UNSET:
        if len(h.parts) != inline:
            raise DecodeError("parts", f"header lists {len(h.parts)} parts, message has {inline}")
    elif inline:
        raise DecodeError("parts", "a frame in shared memory has no payload parts")
    layouts = _LAYOUTS.get((h.format, h.parts)) or _layouts(h.format, h.parts)
    for (name, _, _, expected), part in zip(layouts[:inline], parts[2:], strict=True):  # shm: none inline
        got = len(memoryview(part).cast("B"))
        if got != expected:
            raise DecodeError("size", f"{name}: {got} bytes, shape needs {expected}")
    if h.meta and not _meta_depth_ok(h.meta):
        raise DecodeError("field", f"nested more than {MAX_META_DEPTH} deep - at `$.meta`")
    track_ids = h.annotations.track_ids
    if track_ids and len(track_ids) != len(h.annotations.boxes):  # (UNSET is false)
        raise DecodeError("field", "not one per box - at `$.annotations.track_ids`")
    return Parsed(KIND_FRAME, h, parts, layouts)


_LAYOUTS: dict[tuple[str, tuple[Part, ...]], tuple[Layout, ...]] = {}  # checked (format, parts)
MAX_LAYOUTS = 64  # layouts remembered (all forgotten when full)


def _layouts(fmt: str, descs: tuple[Part, ...]) -> tuple[Layout, ...]:
    """The checked layouts of a header's parts for pixel format `fmt`, remembered when valid
    (they repeat frame after frame); DecodeError if not."""
    checked = _checked_layouts(fmt, descs)
    if len(_LAYOUTS) >= MAX_LAYOUTS:
        _LAYOUTS.clear()
    _LAYOUTS[(fmt, descs)] = checked
    return checked


def _checked_layouts(fmt: str, descs: tuple[Part, ...]) -> tuple[Layout, ...]:
    """The layouts of a header's `parts` (each valid by the schema), checked against each other
    and against pixel format `fmt` (the image: checked here, once, for every stage after);
    DecodeError if not."""
    if fmt not in PIXEL_FORMATS:
        raise DecodeError("pixel_format", f"unknown pixel format {fmt!r:.40} - at `$.format`")
    layouts: list[Layout] = []
    for i, p in enumerate(descs):
        if (i == 0) != (p.name == "image") or any(p.name == q for q, *_ in layouts):
            raise DecodeError("field", f"'image' first, names unique - at `$.parts[{i}].name`")
        expected = math.prod(p.shape) * DTYPES[p.dtype].itemsize
        if expected > MAX_PART_BYTES:
            raise DecodeError("size", f"{p.name}: shape needs {expected} bytes > {MAX_PART_BYTES}")
        layouts.append((p.name, DTYPES[p.dtype], p.shape, expected))
    try:
        PIXEL_FORMATS[fmt].check_layout(descs[0].dtype, descs[0].shape)
    except ValueError as e:
        raise DecodeError("pixel_format", str(e)) from None
    return tuple(layouts)


# a schema error's path (indices dropped) -> its reason; any other path: `field`
_SCHEMA_REASONS = (
    ("$.v.", "version"), ("$.kind.", "kind"), ("$.format.", "pixel_format"), ("$.shm.", "shm"),
    ("$.parts.dtype.", "dtype"), ("$.parts.shape.", "shape"),
)
_MISSING = re.compile(r"Object missing required field `(\w+)`")


def _converted(header: dict[str, Any], schema: type[Any]) -> Any:
    """`header` as `schema` (a `wire_header` type), or DecodeError with the protocol's reason
    and msgspec's message, which names the key path (`... - at `$.parts[0].shape``)."""
    try:
        return msgspec.convert(header, schema)
    except msgspec.ValidationError as e:
        message = str(e)
        path = "$" + message.partition(" - at `$")[2].rstrip("`")
        if missing := _MISSING.match(message):
            path += "." + missing[1]
        path = re.sub(r"\[\d+\]", "", path) + "."
        if path == "$.parts." and "length" in message:
            raise DecodeError("parts", message) from None  # none, or more than MAX_PARTS
        reason = next((r for prefix, r in _SCHEMA_REASONS if path.startswith(prefix)), "field")
        raise DecodeError(reason, message) from None


def _parse_json(parts: list[Any] | tuple[Any, ...]) -> Parsed:
    """Any header: parsed by the standard library's json (refusing duplicate keys), converted
    to the schema's types (`wire_header`) and then checked as the fast path checks it."""
    header = _parse_header(parts[1])
    version, kind = header.get("v"), header.get("kind")
    if type(version) is not int or version != PROTOCOL_VERSION:  # not true, not 1.0
        raise DecodeError("version", f"{version!r:.20} is not {PROTOCOL_VERSION} - at `$.v`")
    if kind not in (KIND_FRAME, KIND_EOS):
        raise DecodeError("kind", f"unknown kind {kind!r:.40} - at `$.kind`")
    stream = _converted(header, Envelope).stream  # the keys that name the topic, first
    topic_buf = _buffer(parts[0])
    if len(topic_buf) > MAX_TOPIC_BYTES:
        raise DecodeError("topic", f"topic of {len(topic_buf)} bytes > {MAX_TOPIC_BYTES}")
    try:
        topic = bytes(topic_buf).decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("topic", "topic is not UTF-8") from None
    if topic != stream:
        raise DecodeError("topic", f"topic {topic!r:.40} != stream {stream!r:.40}")
    h = _converted(header, FrameHeader if kind == KIND_FRAME else EosHeader)
    if isinstance(h, EosHeader):
        if len(parts) != 2:
            raise DecodeError("parts", "an eos message has no payload parts")
        return Parsed(KIND_EOS, h, parts)
    return _frame(h, parts)


def bind(msg: Parsed, shm_reader: ShmReader | None = None) -> Message:
    """The `Message` of a parsed message: its payload wrapped as arrays (views, no copy), read
    from shared memory through `shm_reader` where the header says so. Raises `DecodeError`
    (`shm`, `size`) or `PayloadGone` (the shared-memory slot was reused)."""
    h = msg.header
    if isinstance(h, EosHeader):
        eos = EndOfStream(h.stream, h.epoch, h.last_seq)
        return Message(KIND_EOS, h.sender, h.link_seq, h.sent_ns, eos=eos)
    layouts, shm = msg.layouts, h.shm
    buffers: list[Any] | tuple[Any, ...]
    if shm is not UNSET:
        if shm_reader is None:
            raise DecodeError("shm", "payload in shared memory, but this link does not read it")
        try:
            buffers = shm_reader(shm, [size for *_, size in layouts])
        except PayloadGone as e:
            e.sender, e.link_seq, e.stream, e.epoch, e.seq = (
                h.sender, h.link_seq, h.stream, h.epoch, h.seq
            )
            raise
        for (name, *_, expected), buf in zip(layouts, buffers, strict=True):
            if len(buf) != expected:
                raise DecodeError("size", f"{name}: {len(buf)} bytes, shape needs {expected}")
    else:
        buffers = msg.parts[2:]  # sizes checked by `parse`
    _, dtype, shape, _ = layouts[0]  # the image's
    image = np.ndarray(shape, dtype, buffers[0])  # a view: one numpy call
    arrays = _arrays(layouts, buffers) if len(layouts) > 1 else {}
    ann = h.annotations  # none (for speed, the common case): an Annotations made in C
    annotations = Annotations() if ann == _NO_ANN else _annotations(ann)
    frame = Frame(  # positional: Frame's field order
        h.stream, h.seq, h.capture_ns, h.deadline_ns, image, h.format, h.epoch, arrays,
        annotations, [Span(*t) for t in h.trace] if h.trace else [], h.meta,
    )
    return Message(KIND_FRAME, h.sender, h.link_seq, h.sent_ns, frame)


def _arrays(layouts: tuple[Layout, ...], buffers: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """The parts besides the image, as arrays (views)."""
    return {
        name: np.ndarray(shape, dtype, buf)
        for (name, dtype, shape, _), buf in zip(layouts[1:], buffers[1:], strict=True)
    }


def _annotations(ann: Ann) -> Annotations:
    """The `Annotations` of the header's annotations."""
    return Annotations(
        ann.model,
        ann.labels,
        [Box(*b) for b in ann.boxes],
        ann.backend,
        ann.device,
        ann.precision,
        [] if ann.classes is UNSET else ann.classes,
        [] if ann.track_ids is UNSET else ann.track_ids,
    )


def decode(parts: list[Any], shm_reader: ShmReader | None = None) -> Message:
    """Decode and validate one multipart message (`parse`, then `bind`). Raises `DecodeError`
    on anything invalid; a frame whose payload is in shared memory needs `shm_reader` (else
    it is rejected, `shm`)."""
    return bind(parse(parts), shm_reader)
