"""Header codec: the receiver's two paths and the sender's encoder, per frame.

    python -m tools.bench.header_codec     # microseconds per call, warm and cold

A render-stage frame (image, mask, two spans, labels) as `encode_frame` writes it. "stdlib" is
the path for any header (`codec._parse_json`: json with a duplicate-key hook, then converted to
the same msgspec schema; encoding with `json.dumps`); "msgspec" is the path for medstream's own
encoding (`codec.parse` taking `wire_header.decode_canonical`: typed decode, re-encode, compare).
"warm" repeats the call back to back; "cold" sleeps 16 ms before each call, as a stage at
60 fps does, so caches have been lost to other work: that is the cost a frame pays. It also
prints what `codec.parse` says of what the protocol refuses (docs/protocol.md section 3).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from stream import wire_header
from stream.codec import DecodeError, _parse_json, encode_frame, parse
from stream.frame import Annotations, Frame, Span


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


def _us(fn: Callable[[], object], n: int, sleep_s: float = 0.0) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(n):
        if sleep_s:
            time.sleep(sleep_s)
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000.0


def _verdict(parts: list) -> str:
    try:
        return f"accepted (seq {parse(parts).header.seq})"  # type: ignore[union-attr]  # a frame
    except DecodeError as e:
        return f"refused ({e.reason}: {e.detail})"


def main() -> None:
    parts = encode_frame(_frame(), "infer", 99, time.time_ns())
    head = parts[1]
    header = json.loads(head)
    typed = wire_header.decode_canonical(head)
    assert typed is not None, "encode_frame's header is not canonical"
    rows = [
        ("encode", lambda: json.dumps(header, separators=(",", ":"), allow_nan=False).encode(),
         lambda: wire_header.encode(typed)),
        ("parse", lambda: _parse_json(parts), lambda: parse(parts)),
    ]
    print(f"header: {len(head)} bytes; microseconds per call (median)")
    print(f"{'':10}{'stdlib warm':>13}{'msgspec warm':>14}{'stdlib cold':>13}{'msgspec cold':>14}")
    for name, stdlib, fast in rows:
        warm = [_us(f, 5000) for f in (stdlib, fast)]
        cold = [_us(f, 150, 0.016) for f in (stdlib, fast)]
        print(f"{name:10}{warm[0]:13.1f}{warm[1]:14.1f}{cold[0]:13.1f}{cold[1]:14.1f}")
    body = head[1:-1]
    with_head = lambda h: [parts[0], h, *parts[2:]]  # noqa: E731
    print("seq named twice:", _verdict(with_head(b"{" + body + b',"seq":5}')))
    print("seq = 2^63:", _verdict(with_head(head.replace(b'"seq":1234', b'"seq":9223372036854775808'))))
    print("NaN in meta:", _verdict(with_head(head.replace(b'"seed":7', b'"seed":NaN'))))


if __name__ == "__main__":
    main()
