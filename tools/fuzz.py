"""Fuzz the wire decoder, directly and over a real socket into a running Receiver.

    medstream fuzz --seconds 600 [--seed 7] [--socket-cases 5000] [--json out/fuzz.json]

Cases are valid messages broken in the ways a hostile or buggy peer would: random bytes,
truncated, dropped, duplicated and reordered parts, flipped bits, fields of the wrong type or
range, huge declared shapes, unknown dtypes, wrong versions, non-UTF-8, deeply nested JSON,
NaN/Infinity, huge integers, oversized headers. Every case must end as a valid message or a
`DecodeError` with a reason; anything else is a crash, and the run exits 1. Over the socket,
every message sent must be counted by the Receiver (accepted, or dropped as `invalid:<reason>`)
and a valid frame sent last must still arrive.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.codec import (
    MAX_DIM,
    MAX_HEADER_BYTES,
    DecodeError,
    EndOfStream,
    decode,
    encode_eos,
    encode_frame,
)
from stream.frame import Annotations, Box, Frame, Span
from tools.errors import writable_output

Parts = list[bytes]
MAX_CRASHES_KEPT = 20


def templates() -> list[Parts]:
    """A few valid messages to break: a small grey frame, a colour frame with a mask,
    annotations, trace and meta, and an end-of-stream."""
    rng = np.random.default_rng(0)
    small = Frame("us0", 5, 1_700_000_000_000_000_000, 1_700_000_000_050_000_000,
                  rng.integers(0, 256, (6, 8), dtype=np.uint8), "gray8", epoch=3)
    full = Frame(
        "cam", 9, 1_700_000_000_000_000_000, 1_700_000_000_050_000_000,
        rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), "bgr8", epoch=11,
        parts={"mask": rng.integers(0, 3, (4, 6), dtype=np.uint8),
               "score": rng.random((2, 2)).astype(np.float32)},
        annotations=Annotations("m", ["bg", "tool"], [Box(1, 2, 3, 4, 1, 0.5)], "onnxruntime"),
        trace=[Span("grab", 1, 2), Span("infer", 3, 4)],
        meta={"pixel_spacing_mm": [0.1, 0.1], "note": "x"},
    )
    return [
        [bytes(memoryview(p)) for p in encode_frame(small, "grab", 1, 1)],
        [bytes(memoryview(p)) for p in encode_frame(full, "infer", 7, 2)],
        encode_eos(EndOfStream("us0", 3, 5), "grab", 1, 3),
    ]


def _header(parts: Parts) -> dict[str, Any]:
    return json.loads(parts[1])


def _with_header(parts: Parts, header: Any, allow_nan: bool = False) -> Parts:
    return [parts[0], json.dumps(header, allow_nan=allow_nan).encode(), *parts[2:]]


def _odd_value(rng: random.Random) -> Any:
    return rng.choice([
        -1, 0, 2**63, 2**64 + 1, -(2**70), 1.5, 1e308, "", "x" * 300, None, True, False, [], {},
        [[[[]]]], {"a": {"b": {"c": {}}}}, [1, 2, 3], "\u202e", MAX_DIM + 1,
    ])


def m_valid(rng: random.Random, p: Parts) -> Parts:
    return p


def m_random_parts(rng: random.Random, p: Parts) -> Parts:
    return [rng.randbytes(rng.randint(0, 200)) for _ in range(rng.randint(0, 12))]


def m_random_header(rng: random.Random, p: Parts) -> Parts:
    return [p[0], rng.randbytes(rng.randint(0, 400)), *p[2:]]


def m_truncate(rng: random.Random, p: Parts) -> Parts:
    i = rng.randrange(len(p))
    out = list(p)
    out[i] = out[i][: rng.randint(0, max(0, len(out[i]) - 1))]
    return out


def m_drop_part(rng: random.Random, p: Parts) -> Parts:
    out = list(p)
    del out[rng.randrange(len(out))]
    return out


def m_duplicate_part(rng: random.Random, p: Parts) -> Parts:
    out = list(p)
    i = rng.randrange(len(out))
    out.insert(rng.randrange(len(out) + 1), out[i])
    return out


def m_reorder(rng: random.Random, p: Parts) -> Parts:
    out = list(p)
    rng.shuffle(out)
    return out


def m_bitflip(rng: random.Random, p: Parts) -> Parts:
    out = list(p)
    i = rng.randrange(len(out))
    b = bytearray(out[i])
    for _ in range(rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    out[i] = bytes(b)
    return out


def m_field(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    key = rng.choice([*h.keys(), "parts", "annotations", "trace", "meta", "seq", "stream"])
    h[key] = _odd_value(rng)
    return _with_header(p, h)


def m_delete_field(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    h.pop(rng.choice(list(h)), None)
    return _with_header(p, h)


def m_part_desc(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    descs = h.get("parts")
    if not descs:
        return m_field(rng, p)
    d = rng.choice(descs)
    which = rng.choice(["shape", "dtype", "name"])
    d[which] = rng.choice({
        "shape": [[MAX_DIM, MAX_DIM, 4, 4], [2**40], [0], [-1], [], [1] * 10, [1.5, 2], "6,8",
                  [MAX_DIM + 1, 1], [2**62, 2**62]],
        "dtype": ["object", "complex64", ">u2", "", 5, None, "float128", "U10", "V8"],
        "name": ["image", "", "x" * 100, 7, None],
    }[which])
    return _with_header(p, h)


def m_shm_reference(rng: random.Random, p: Parts) -> Parts:
    """A frame whose payload claims to be in a shared-memory ring (docs/protocol.md section 8)."""
    h = _header(p)
    h["shm"] = rng.choice([
        {"ring": "medstream-1-x-00000000", "slot": 0, "gen": 2, "offsets": [0]},
        {"ring": "../../etc/passwd", "slot": -1, "gen": 1, "offsets": []},
        {"ring": 5}, [], "slot", None, _odd_value(rng),
    ])
    out = _with_header(p, h)
    return out[:2] if rng.random() < 0.8 else out


def m_version(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    h["v"] = rng.choice([0, 2, "1", 1.0, True, None, 10**30, [1]])
    return _with_header(p, h)


def m_kind(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    h["kind"] = rng.choice(["pickle", "", None, 1, "FRAME", "eos", "frame"])
    return _with_header(p, h)


def m_non_utf8(rng: random.Random, p: Parts) -> Parts:
    out = list(p)
    i = rng.choice([0, 1])
    b = bytearray(out[i])
    b.insert(rng.randint(0, len(b)), rng.choice([0xFF, 0xC0, 0xED, 0x80]))
    out[i] = bytes(b)
    return out


def m_deep_nesting(rng: random.Random, p: Parts) -> Parts:
    depth = rng.choice([9, 50, 500, 5000, 30000])
    if rng.random() < 0.5:
        head = b"[" * depth + b"]" * depth
    else:
        h = _header(p)
        text = json.dumps(h)
        nested = "[" * depth + "1" + "]" * depth
        head = (text[:-1] + f', "meta": {{"deep": {nested}}}}}').encode()
    return [p[0], head, *p[2:]]


def m_duplicate_key(rng: random.Random, p: Parts) -> Parts:
    """Name one top-level key twice (parsers disagree on which wins: refused)."""
    key = rng.choice(list(_header(p)))
    head = bytes(p[1])
    dup = json.dumps({key: _odd_value(rng)}, allow_nan=True)[1:-1].encode()
    return [p[0], head[:1] + dup + b"," + head[1:], *p[2:]]


def m_nan(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    h.setdefault("meta", {})["v"] = rng.choice([float("nan"), float("inf"), float("-inf")])
    return _with_header(p, h, allow_nan=True)


def m_huge_int(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    text = json.dumps(h).replace('"seq": ', '"seq": ' + "9" * rng.choice([20, 5000]), 1)
    return [p[0], text.encode(), *p[2:]]


def m_big_header(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    h["pad"] = "x" * (MAX_HEADER_BYTES + rng.randint(-100, 100))
    return _with_header(p, h)


def m_many_items(rng: random.Random, p: Parts) -> Parts:
    h = _header(p)
    which = rng.choice(["boxes", "labels", "trace"])
    if which == "trace":
        h["trace"] = [["s", 1, 2]] * rng.choice([65, 2000])
    else:
        ann = h.setdefault("annotations", {})
        ann[which] = [[1, 2, 3, 4, 1, 0.5]] * 4097 if which == "boxes" else ["l"] * 257
    return _with_header(p, h)


def m_payload_size(rng: random.Random, p: Parts) -> Parts:
    out = list(p)
    if len(out) > 2:
        i = rng.randrange(2, len(out))
        out[i] = out[i] + rng.randbytes(rng.randint(1, 16))
    return out


def m_empty(rng: random.Random, p: Parts) -> Parts:
    return rng.choice([[], [b""], [b"", b""], [b"", b"{}"], [p[0], b"null"], [p[0], b"1"]])


MUTATORS: dict[str, Callable[[random.Random, Parts], Parts]] = {
    name[2:]: fn for name, fn in globals().items() if name.startswith("m_") and callable(fn)
}


def fuzz_case(rng: random.Random, bases: list[Parts]) -> tuple[str, Parts]:
    """One (mutator name, message parts) case; sometimes two mutations stacked."""
    name = rng.choice(list(MUTATORS))
    parts = list(rng.choice(bases))
    try:
        parts = MUTATORS[name](rng, parts)
        if rng.random() < 0.2 and parts:
            second = rng.choice(list(MUTATORS))
            parts = MUTATORS[second](rng, parts)
            name = f"{name}+{second}"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        pass  # a stacked mutation that no longer applies (e.g. header already garbage)
    return name, parts


def outcome(parts: Parts) -> str:
    """'accepted', 'rejected:<reason>'; raises anything that is not a DecodeError. An accepted
    frame must also encode again (the next stage forwards it), and so must its JSON."""
    try:
        msg = decode(parts)
    except DecodeError as e:
        return f"rejected:{e.reason}"
    if msg.frame is not None:
        encode_frame(msg.frame, "next-stage", 1, 1)
    return "accepted"


@dataclass
class FuzzResult:
    seed: int
    cases: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[dict[str, str]] = field(default_factory=list)
    crash_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "cases": self.cases,
            "seconds": round(self.seconds, 2),
            "crashes": self.crash_count,
            "outcomes": dict(sorted(self.outcomes.items())),
            "crash_examples": self.crashes,
        }


def fuzz_decoder(seed: int, cases: int = 0, seconds: float = 0.0) -> FuzzResult:
    """Run `cases` cases (or as many as fit in `seconds`) through `decode`."""
    rng = random.Random(seed)
    bases = templates()
    result = FuzzResult(seed)
    t0 = time.monotonic()
    while (result.cases < cases) if cases else (time.monotonic() - t0 < seconds):
        name, parts = fuzz_case(rng, bases)
        result.cases += 1
        try:
            result.outcomes[outcome(parts)] += 1
        except Exception as e:  # the point of fuzzing: anything here is a bug
            result.crash_count += 1
            result.outcomes[f"crash:{type(e).__name__}"] += 1
            if len(result.crashes) < MAX_CRASHES_KEPT:
                result.crashes.append({
                    "mutator": name,
                    "error": f"{type(e).__name__}: {e}"[:300],
                    "parts": repr([x[:120] for x in parts])[:600],
                    "where": traceback.format_exc(limit=-2)[-600:],
                })
    result.seconds = time.monotonic() - t0
    return result


@dataclass
class SocketFuzzResult:
    sent: int = 0
    counted: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    sentinel_received: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.sentinel_received and self.counted == self.sent

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "counted": self.counted,
            "sentinel_received": self.sentinel_received,
            "ok": self.ok,
            "drops": self.drops,
            "counters": self.counters,
            "seconds": round(self.seconds, 2),
        }


def fuzz_receiver(seed: int, cases: int, timeout_s: float = 30.0) -> SocketFuzzResult:
    """Send `cases` fuzzed messages over tcp into a live Receiver, then a valid sentinel frame;
    every message must be counted and the sentinel must arrive."""
    import zmq

    from stream.clock import WallClock
    from stream.stats import StageStats
    from stream.transport import LinkSpec, Receiver
    from tools.bench.hop import free_port

    rng = random.Random(seed)
    bases = templates()
    ctx = zmq.Context()
    stats = StageStats("fuzz-target", "infer", WallClock())
    spec = LinkSpec(endpoint=f"tcp://127.0.0.1:{free_port()}", pattern="pushpull", mode="live",
                    bind="consumer", max_message_mb=1.0)
    rx = Receiver(ctx, "fuzz", spec, "fuzz-target", WallClock(), stats)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    push.connect(spec.endpoint)
    result = SocketFuzzResult()
    t0 = time.monotonic()
    sentinel = Frame("sentinel", 424242, time.time_ns(), time.time_ns() + 10**12,
                     np.zeros((2, 2), np.uint8))
    try:
        while result.sent < cases:
            _, parts = fuzz_case(rng, bases)
            if not parts:
                continue  # ZeroMQ cannot send a message with no parts
            push.send_multipart(parts)
            result.sent += 1
            if result.sent % 64 == 0:
                rx.recv(0)  # the stage takes what is there now and then, as a stage would
        push.send_multipart(encode_frame(sentinel, "fuzz", 1, time.time_ns()))
        result.sent += 1
    except zmq.Again:  # the receiver stopped taking messages: a hang, reported as a failure
        timeout_s = 0.0
    try:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not result.sentinel_received:
            msg = rx.recv(100)
            if msg is not None and msg.frame is not None and msg.frame.stream == "sentinel":
                result.sentinel_received = True
        time.sleep(0.1)
        rx.recv(0)  # flush the last counts
    finally:
        push.close()
        rx.close()
        ctx.term()
    c = stats.counters
    invalid = sum(n for r, n in stats.drops.items() if r.startswith("invalid:"))
    result.counted = invalid + c["in"] + c["eos"] + c["eos_repeats"]
    result.drops = dict(sorted(stats.drops.items()))
    result.counters = dict(sorted(c.items()))
    result.seconds = time.monotonic() - t0
    return result


def _print(result: FuzzResult, sock: SocketFuzzResult | None) -> None:
    print(f"decoder fuzz: seed {result.seed}, {result.cases} cases in {result.seconds:.1f} s, "
          f"{result.crash_count} crashes")
    for name, n in sorted(result.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28}{n:>10}")
    for crash in result.crashes[:5]:
        print(f"CRASH {crash['mutator']}: {crash['error']}\n{crash['where']}")
    if sock is not None:
        print(f"socket fuzz: {sock.sent} messages sent into a live Receiver, {sock.counted} counted, "
              f"sentinel {'received' if sock.sentinel_received else 'NOT received'} "
              f"({sock.seconds:.1f} s)")


def _cmd_fuzz(args: argparse.Namespace) -> int:
    if args.json:  # before the fuzzing, not after it
        writable_output(args.json, "the results file")
    seed = args.seed if args.seed is not None else int(time.time())
    result = fuzz_decoder(seed, seconds=args.seconds)
    sock = fuzz_receiver(seed, args.socket_cases) if args.socket_cases else None
    _print(result, sock)
    if args.json:
        out = {"decoder": result.to_dict(), "socket": sock.to_dict() if sock else None}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    failed = result.crash_count > 0 or (sock is not None and not sock.ok)
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    from stream.cli import above_zero, count_or_zero

    p = sub.add_parser("fuzz", help="fuzz the wire decoder (and a live Receiver over tcp)")
    p.add_argument("--seconds", type=above_zero, default=60.0, help="decoder fuzzing time")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the time)")
    p.add_argument("--socket-cases", type=count_or_zero, default=2000,
                   help="messages fuzzed over tcp into a Receiver (0: skip)")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=_cmd_fuzz)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return _cmd_fuzz(parser.parse_args(["fuzz", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
