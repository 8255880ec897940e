"""Gaps in `link_seq` and `seq` are counted only as far as a sender could have sent; forged
jumps are refused with a named reason; a part over max_message_mb is counted, not silent."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import zmq

from stream.clock import FakeClock
from stream.codec import EndOfStream, encode_eos, encode_frame
from stream.frame import Frame
from stream.gap_budget import GAP_CREDIT_S, MAX_LINK_FPS
from stream.stats import StageStats
from stream.transport import LinkSpec, Receiver

from .helpers import bound_endpoint, wait_until


@contextmanager
def forger(
    ctx: zmq.Context,
    mode: str,
    clock: FakeClock,
    max_message_mb: float = 256.0,
    stopping: bool = False,
) -> Iterator[tuple[zmq.Socket, Receiver]]:
    """A raw XPUB socket bound on a free tcp port (read back, not guessed) and a subscribed
    medstream Receiver on that pubsub link, both on the test's context (`zmq_ctx`)."""
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    spec = LinkSpec(
        endpoint=bound_endpoint(pub), pattern="pubsub", mode=mode, max_message_mb=max_message_mb
    )
    stats = StageStats("rx", "infer", clock)
    rx = Receiver(ctx, "l", spec, "rx", clock, stats, should_stop=lambda: stopping)
    try:
        assert pub.poll(5000) and pub.recv()[:1] == b"\x01"  # subscribed
        yield pub, rx
    finally:
        rx.close()
        pub.close()


def forged(link_seq: int, seq: int, epoch: int = 7) -> list:
    frame = Frame("s", seq, 1, 2, np.zeros((4, 4), np.uint8), "gray8", epoch=epoch)
    return encode_frame(frame, "grab", link_seq, 1)


def deliver(pub: zmq.Socket, rx: Receiver, parts: list) -> bool:
    pub.send_multipart(parts)
    return rx.recv(2000) is not None


def refused(pub: zmq.Socket, rx: Receiver, parts: list, timeout_s: float = 5.0) -> bool:
    """Sends `parts`; true once the receiver counted them as an implausible gap without
    returning a frame (polled, so a refusal costs milliseconds, not a whole receive timeout)."""
    before = rx.stats.drops["invalid:implausible_gap"]
    pub.send_multipart(parts)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if rx.recv(20) is not None:
            return False
        if rx.stats.drops["invalid:implausible_gap"] > before:
            return True
    return False


def test_forged_jumps_are_refused_and_the_link_resynchronises(zmq_ctx: zmq.Context) -> None:
    clock = FakeClock()
    with forger(zmq_ctx, "lossless", clock) as (pub, rx):
        assert deliver(pub, rx, forged(1, 0))
        assert deliver(pub, rx, forged(4, 3))  # 2 frames lost on the link: plausible
        assert rx.stats.drops["overflow"] == 2
        assert refused(pub, rx, forged(10**15, 4))  # link_seq jump
        assert deliver(pub, rx, forged(10**15 + 1, 5))  # judged from the resynchronised point
        assert refused(pub, rx, forged(10**15 + 2, 10**15))  # seq jump in one epoch
        assert deliver(pub, rx, forged(10**15 + 3, 6))
        rx.recv(0)
        drops = rx.stats.drops
        assert drops["overflow"] == 2 and drops["invalid:implausible_gap"] == 2, dict(drops)
        info = rx.stats.snapshot()["info"]  # the bookkeeping is copied into a snapshot
        assert info["seq_high"]["s@7"] == 6
        assert info["arrived"]["s@7"] == [4 + 2, 0, 6]  # received + lost on the link


def test_the_gap_credit_grows_with_time_up_to_its_cap(zmq_ctx: zmq.Context) -> None:
    clock = FakeClock()
    with forger(zmq_ctx, "lossless", clock) as (pub, rx):
        assert deliver(pub, rx, forged(1, 0))
        clock.advance_ms(60_000)  # a minute: the credit is capped, not 60 s worth
        cap = int(MAX_LINK_FPS * GAP_CREDIT_S)
        assert refused(pub, rx, forged(2 + cap + 1, 1))
        clock.advance_ms(60_000)
        assert deliver(pub, rx, forged(2 + cap + 1 + cap + 1, 2))
        assert rx.stats.drops["overflow"] == cap


@pytest.mark.parametrize("mode", ["live", "lossless"])
def test_a_part_over_max_message_mb_is_counted_and_the_link_comes_back(
    zmq_ctx: zmq.Context, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ZeroMQ refuses the part by dropping the connection and, on the connecting side, never
    connects again by itself: the receiver counts the drop, says so, and connects again."""
    clock = FakeClock()
    with caplog.at_level(logging.WARNING), forger(zmq_ctx, mode, clock, max_message_mb=0.01) as (pub, rx):
        pub.send_multipart([b"s", b"x" * 20_000])  # refused by ZeroMQ: the connection drops
        end = time.monotonic() + 5
        while rx.stats.counters["disconnects"] == 0 and time.monotonic() < end:
            rx.recv(50)
        assert rx.stats.counters["disconnects"] == 1
        ok, link_seq = False, 0
        while not ok and time.monotonic() < end + 5:  # the link comes back after the refusal
            link_seq += 1
            pub.send_multipart(forged(link_seq, link_seq))
            ok = rx.recv(100) is not None
        assert ok and rx.stats.counters["disconnects"] == 1
    assert caplog.text.count("link l lost a connection") == 1


def test_a_peer_that_ended_its_stream_going_away_is_counted_not_warned(
    zmq_ctx: zmq.Context, caplog: pytest.LogCaptureFixture
) -> None:
    """Every normal stop ends with the upstream stage sending eos and closing its socket: that
    disconnect is counted, but it is not the warning an oversized part or a crash gets."""
    clock = FakeClock()
    with caplog.at_level(logging.WARNING), forger(zmq_ctx, "lossless", clock) as (pub, rx):
        assert deliver(pub, rx, forged(1, 0))
        pub.send_multipart(encode_eos(EndOfStream("s", 7, 0), "grab", 2, 1))
        end = time.monotonic() + 5
        while not rx.eos_seen and time.monotonic() < end:
            rx.recv(50)
        assert rx.eos_seen
        pub.close()
        while rx.stats.counters["disconnects"] == 0 and time.monotonic() < end + 5:
            rx.recv(50)
        assert rx.stats.counters["disconnects"] == 1
    assert "lost a connection" not in caplog.text


def test_a_peer_that_ended_with_frames_still_unread_is_counted_not_warned(
    zmq_ctx: zmq.Context, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow consumer of a lossless link may hear of the disconnect while the producer's
    last frames and its eos still wait in its queue: once they are read, it is a normal end."""
    clock = FakeClock()
    with caplog.at_level(logging.WARNING), forger(zmq_ctx, "lossless", clock) as (pub, rx):
        assert deliver(pub, rx, forged(1, 0))
        for k in range(2, 5):
            pub.send_multipart(forged(k, k - 1))
        pub.send_multipart(encode_eos(EndOfStream("s", 7, 3), "grab", 5, 1))
        pub.setsockopt(zmq.LINGER, 5000)
        pub.close()  # ZeroMQ sends what is queued, then drops the connection
        assert rx._monitor is not None
        assert wait_until(lambda: rx._monitor.poll(0), 5)  # the disconnect, before any read
        got = [rx.recv(2000) for _ in range(4)]
        assert [m.frame.seq for m in got[:3]] == [1, 2, 3] and got[3].frame is None  # then eos
        assert rx.eos_seen and rx.stats.counters["disconnects"] == 1
    assert "lost a connection" not in caplog.text


@pytest.mark.parametrize("stopping", [False, True])
def test_a_peer_gone_without_eos_is_warned_unless_the_stage_is_stopping(
    zmq_ctx: zmq.Context, caplog: pytest.LogCaptureFixture, stopping: bool
) -> None:
    """A peer that goes away mid-stream is worth a warning; while this stage is being stopped
    too (the supervisor stops every stage, a producer still starting sends no eos) it is only
    counted: a Ctrl-C during start-up printed the warning."""
    clock = FakeClock()
    with caplog.at_level(logging.WARNING), forger(zmq_ctx, "live", clock, stopping=stopping) as (
        pub,
        rx,
    ):
        assert deliver(pub, rx, forged(1, 0))
        pub.close()
        end = time.monotonic() + 5
        while rx.stats.counters["disconnects"] == 0 and time.monotonic() < end:
            rx.recv(50)
        assert rx.stats.counters["disconnects"] == 1
        rx.recv(50)  # the warning is said once what arrived before the loss is read
    assert ("link l lost a connection" in caplog.text) is not stopping
