"""Header codec: today's (stdlib json, duplicate-key hook, hand checks) against msgspec.

    python -m tools.bench.header_codec     # per-frame header encode and parse, in microseconds

A render-stage frame (image, mask, two spans, labels) as `encode_frame` writes it. "parse" is
`codec.parse` (JSON and every header check) against `msgspec.json.decode` into a Struct with the
same types and bounds; "json only" is the JSON layer alone. It also prints how msgspec treats
what the protocol refuses (docs/protocol.md section 3): a key named twice, 2^63, NaN.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import numpy as np

from stream.codec import _parse_header, encode_frame, parse
from stream.frame import Annotations, Frame, Span

Int = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Name = Annotated[str, msgspec.Meta(max_length=256)]


class Part(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(max_length=64)]
    dtype: str
    shape: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=16384)]], msgspec.Meta(min_length=1, max_length=4)]


class Ann(msgspec.Struct):
    model: Name = ""
    labels: Annotated[list[Name], msgspec.Meta(max_length=256)] = []
    boxes: Annotated[list[tuple[float, float, float, float, int, float]], msgspec.Meta(max_length=4096)] = []
    backend: Name = ""
    device: Name = ""
    precision: Name = ""


class Header(msgspec.Struct):
    v: int
    kind: str
    sender: Name
    link_seq: Int
    sent_ns: Int
    stream: Name
    epoch: Int
    seq: Int
    capture_ns: Int
    deadline_ns: Int
    format: str
    parts: Annotated[list[Part], msgspec.Meta(min_length=1, max_length=8)]
    annotations: Ann = msgspec.field(default_factory=Ann)
    trace: Annotated[list[tuple[Name, Int, Int]], msgspec.Meta(max_length=64)] = []
    meta: dict[str, Any] = {}


def _frame() -> Frame:
    now = time.time_ns()
    image = np.zeros((512, 512), np.uint8)
    return Frame(
        "grab", 1234, now, now + 10**8, image, "gray8", epoch=now, parts={"mask": image},
        annotations=Annotations(model="us-seg", labels=["background", "anechoic", "lesion"],
                                backend="onnxruntime", device="cpu", precision="fp32"),
        trace=[Span("grab", now, now + 1000), Span("infer", now + 2000, now + 9000)],
        meta={"source": {"kind": "phantom", "seed": 7}},
    )


def _us(fn: Callable[[], object], n: int = 20000) -> float:
    for _ in range(200):
        fn()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1000.0


def _verdict(text: bytes) -> str:
    try:
        return repr(msgspec.json.decode(text, type=Header).seq)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        return f"refused ({e})"


def main() -> None:
    parts = encode_frame(_frame(), "infer", 99, time.time_ns())
    head = parts[1]
    header = json.loads(head)
    rows = [
        ("encode", lambda: json.dumps(header, separators=(",", ":"), allow_nan=False).encode(),
         lambda: msgspec.json.encode(header)),
        ("parse (typed)", lambda: parse(parts), lambda: msgspec.json.decode(head, type=Header)),
        ("json only", lambda: _parse_header(head), lambda: msgspec.json.decode(head)),
    ]
    print(f"header: {len(head)} bytes; microseconds per call (best of 3)")
    print(f"{'':16}{'today':>10}{'msgspec':>10}")
    for name, ours, theirs in rows:
        a, b = (min(_us(f) for _ in range(3)) for f in (ours, theirs))
        print(f"{name:16}{a:10.1f}{b:10.1f}")
    body = head.decode()[1:-1]
    print("seq named twice:", _verdict(f'{{{body},"seq":5}}'.encode()), "(protocol: refuse)")
    print("seq = 2^63:", _verdict(head.replace(b'"seq":1234', b'"seq":9223372036854775808')))
    print("NaN in meta:", _verdict(head.replace(b'"seed":7', b'"seed":NaN')))


if __name__ == "__main__":
    main()
