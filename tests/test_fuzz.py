"""Hostile input: the decoder and a live Receiver never crash, hang or allocate big on garbage;
every rejected message is counted with its reason. (The long run is `medstream fuzz`.)"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stream.transport as transport
from stream.clock import WallClock
from stream.codec import (
    MAX_META_DEPTH,
    REJECT_REASONS,
    DecodeError,
    decode,
    encode_frame,
)
from stream.frame import Frame
from stream.stats import StageStats
from stream.transport import MAX_TRACKED, LinkSpec, Receiver
from tools.fuzz import fuzz_decoder, fuzz_receiver, outcome, templates

from .helpers import ANY_PORT, bound_endpoint

PLAIN_CASES = 20_000
SOCKET_CASES = 1_500


@pytest.mark.slow  # long: thousands of generated cases
def test_plain_random_fuzz_has_no_crashes_and_reaches_every_reason() -> None:
    result = fuzz_decoder(seed=20240611, cases=PLAIN_CASES)
    assert result.cases == PLAIN_CASES
    assert result.crash_count == 0, result.crashes[:3]
    reasons = {k.split(":", 1)[1] for k in result.outcomes if k.startswith("rejected:")}
    assert reasons == set(REJECT_REASONS), set(REJECT_REASONS) - reasons
    assert result.outcomes["accepted"] > 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=12))
def test_hypothesis_random_parts(parts: list[bytes]) -> None:
    assert outcome(parts)  # 'accepted' or 'rejected:<reason>'; anything raised is a bug


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
BASES = templates()
KEYS = sorted({k for b in BASES for k in json.loads(b[1])} | {"parts", "annotations", "trace", "meta"})


@pytest.mark.slow  # long: thousands of generated cases
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(BASES),
    changes=st.dictionaries(st.sampled_from(KEYS), JSON, min_size=1, max_size=4),
    payload=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_hypothesis_header_fields(base: list[bytes], changes: dict, payload: bytes | None) -> None:
    header = json.loads(base[1])
    header.update(changes)
    parts = [base[0], json.dumps(header).encode(), *base[2:]]  # NaN/Infinity tokens included
    if payload is not None and len(parts) > 2:
        parts[2] = payload
    assert outcome(parts)  # 'accepted' or 'rejected:<reason>'; anything raised is a bug


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"v": True}, "version"),
        ({"v": 1.0}, "version"),
        ({"meta": {"x": float("nan")}}, "header_json"),
        ({"meta": {"x": float("inf")}}, "header_json"),
        ({"meta": {"a": json.loads("[" * (MAX_META_DEPTH + 1) + "]" * (MAX_META_DEPTH + 1))}}, "field"),
        ({"trace": [["grab", 1, 2**64]]}, "field"),
        ({"annotations": {"boxes": [[0, 0, 1, 1, -1, 0.5]]}}, "field"),
        ({"annotations": {"boxes": [[0, 0, 1e300, 1, 1, 0.5]]}}, "field"),
    ],
)
def test_hardened_fields(change: dict, reason: str) -> None:
    base = BASES[1]
    header = json.loads(base[1])
    header.update(change)
    with pytest.raises(DecodeError) as err:
        decode([base[0], json.dumps(header).encode(), *base[2:]])
    assert err.value.reason == reason


def test_big_topic_and_deep_nesting_are_cheap() -> None:
    base = BASES[0]
    with pytest.raises(DecodeError) as err:
        decode([b"t" * 10_000_000, *base[1:]])
    assert err.value.reason == "topic"
    t0 = time.perf_counter()
    for depth in (1_000, 30_000):
        with pytest.raises(DecodeError) as err:
            decode([base[0], b"[" * depth + b"]" * depth, *base[2:]])
        assert err.value.reason == "header_json"
    # both take well under a millisecond; a parser that recursed or went quadratic would take
    # seconds: 1 s is a sanity bound for a loaded machine, not a speed target
    assert time.perf_counter() - t0 < 1.0


def test_socket_fuzz_into_a_live_receiver() -> None:
    result = fuzz_receiver(seed=7, cases=SOCKET_CASES)
    assert result.sentinel_received, result.to_dict()
    assert result.counted == result.sent == SOCKET_CASES + 1, result.to_dict()
    assert sum(n for r, n in result.drops.items() if r.startswith("invalid:")) > SOCKET_CASES // 2


PushPair = tuple[Receiver, zmq.Socket, StageStats]
PushInto = Callable[..., PushPair]  # push_into(max_message_mb=256.0)


@pytest.fixture
def push_into(zmq_ctx: zmq.Context) -> Iterator[PushInto]:
    """`push_into(max_message_mb)`: a live Receiver bound on port 0 and a raw PUSH socket
    connected to it (the test's hostile sender); closed on teardown."""
    receivers: list[Receiver] = []

    def open_(max_message_mb: float = 256.0) -> PushPair:
        stats = StageStats("rx", "infer", WallClock())
        spec = LinkSpec(endpoint=ANY_PORT, pattern="pushpull", mode="live", bind="consumer",
                        max_message_mb=max_message_mb)
        rx = Receiver(zmq_ctx, "l", spec, "rx", WallClock(), stats)
        receivers.append(rx)
        push = zmq_ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDTIMEO, 5000)
        push.connect(bound_endpoint(rx.sock))
        return rx, push, stats

    yield open_
    for rx in receivers:
        rx.close()  # the rest (the PUSH sockets) the zmq_ctx fixture closes


def _frame(stream: str, seq: int, shape: tuple[int, ...] = (4, 4)) -> Frame:
    now = time.time_ns()
    return Frame(stream, seq, now, now + 10**12, np.zeros(shape, np.uint8))


def _receive(rx: Receiver, stream: str, timeout: float = 5.0) -> Frame | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = rx.recv(100)
        if msg is not None and msg.frame is not None and msg.frame.stream == stream:
            return msg.frame
    return None


def test_oversized_part_is_refused_before_allocation_and_the_link_recovers(push_into: PushInto) -> None:
    rx, push, _stats = push_into(0.01)  # 10 KiB per part
    push.send_multipart(encode_frame(_frame("big", 1, (1000, 1000)), "p", 1, 1))
    end = time.monotonic() + 5
    got = None
    while got is None and time.monotonic() < end:  # the peer reconnects after the refusal
        push.send_multipart(encode_frame(_frame("small", 2), "p", 2, 2))
        got = _receive(rx, "small", timeout=0.2)
    assert got is not None
    assert "big" not in rx.epochs  # never delivered, never allocated by the receiver
    rx.recv(0)
    assert _stats.counters["disconnects"] == 1  # the refusal is counted


def test_a_decoder_bug_is_counted_not_fatal(monkeypatch: pytest.MonkeyPatch, push_into: PushInto) -> None:
    calls = {"n": 0}
    real = transport.parse

    def flaky(parts, *rest):  # rest: the receiver's shared-memory reader
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug")
        return real(parts, *rest)

    monkeypatch.setattr(transport, "parse", flaky)
    rx, push, stats = push_into()
    push.send_multipart(encode_frame(_frame("s", 1), "p", 1, 1))
    push.send_multipart(encode_frame(_frame("s", 2), "p", 2, 2))
    got = _receive(rx, "s")
    assert got is not None and got.seq == 2
    rx.recv(0)
    assert stats.drops["invalid:decoder_error"] == 1


def test_link_bookkeeping_is_bounded(push_into: PushInto) -> None:
    rx, push, stats = push_into()
    for i in range(MAX_TRACKED * 4):
        push.send_multipart(encode_frame(_frame(f"s{i}", i), f"sender{i}", 1, 1))
    assert _receive(rx, f"s{MAX_TRACKED * 4 - 1}") is not None
    assert len(rx.epochs) <= MAX_TRACKED and len(rx.seq_high) <= MAX_TRACKED
    info = stats.snapshot()["info"]
    assert len(info["seq_high"]) <= MAX_TRACKED and len(info["arrived"]) <= MAX_TRACKED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(BASES),
    changes=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=3),
)
def test_the_msgspec_fast_path_accepts_only_what_the_json_path_accepts_alike(
    base: list[bytes], changes: dict
) -> None:
    """Headers in medstream's own spacing reach the fast path (`wire_header`); whatever it
    accepts, the stdlib path accepts too, with the same result (else it declines: None)."""
    from stream.codec import _parse_canonical, _parse_json

    header = json.loads(base[1])
    header.update(changes)
    try:
        head = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN / Infinity: not JSON, never canonical
        return
    parts = [base[0], head.encode(), *base[2:]]
    fast = _parse_canonical(parts)
    if fast is not None:
        assert fast == _parse_json(parts)
