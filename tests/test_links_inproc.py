"""Link semantics in one process (the `link` fixture of conftest.py): lossless keeps every frame
in order, live hands over the newest and counts every frame it skipped. tests/test_transport.py
checks the same across processes (marked slow)."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from stream.clock import WallClock
from stream.stats import StageStats
from stream.transport import LinkSpec, Sender

from .helpers import OpenLink, inproc_endpoint, make_frame


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
@pytest.mark.parametrize("pattern", ["pubsub", "pushpull"])
def test_lossless_link_keeps_every_frame_in_order(
    link: OpenLink, transport: str, pattern: str
) -> None:
    ends = link(pattern, "lossless", transport=transport, hwm=4)
    assert ends.tx.wait_for_consumers(1, 10)
    n = 60  # far more than the queues hold: the sender has to wait for the receiver
    sent: list[bool] = []
    sender = threading.Thread(
        target=lambda: sent.extend(ends.tx.send(make_frame(i, (16, 16), time.time_ns())) for i in range(n))
    )
    sender.start()
    got = []
    while len(got) < n and (msg := ends.rx.recv(5000)) is not None:
        assert msg.frame is not None
        got.append(msg.frame.seq)
    sender.join(10)
    assert got == list(range(n)) and all(sent) and len(sent) == n
    assert not ends.rx_stats.drops and not ends.tx_stats.drops


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_live_link_hands_over_the_newest_and_counts_what_it_skipped(
    link: OpenLink, transport: str
) -> None:
    # queues deep enough for the whole burst: nothing is lost on the way, so what the receiver
    # skips is its own choice (newest wins), not the sender's queue overflowing
    ends = link("pubsub", "live", transport=transport, hwm=64)
    assert ends.tx.wait_for_consumers(1, 10)
    n = 40
    for seq in range(n):  # a burst the consumer does not keep up with; send never blocks
        assert ends.tx.send(make_frame(seq, (64, 64), time.time_ns()))
    got = []
    while (not got or got[-1] != n - 1) and (msg := ends.rx.recv(5000)) is not None:
        assert msg.frame is not None
        got.append(msg.frame.seq)
    assert got and got[-1] == n - 1, got  # the newest frame arrives
    assert got == sorted(set(got)) and len(got) < n  # in order, and not a backlog
    # every frame is accounted for: received, or counted as skipped by one end or the other
    skipped = ends.rx_stats.drops["overflow"] + sum(ends.tx_stats.drops.values())
    assert len(got) + skipped == n, (got, dict(ends.rx_stats.drops), dict(ends.tx_stats.drops))


@pytest.mark.parametrize("count_drops", [True, False])
def test_pubsub_sender_counts_frames_to_nobody(zmq_ctx: zmq.Context, count_drops: bool) -> None:
    """Before a subscriber joins and after it leaves, a frame is refused as `no_consumer`:
    counted (unless the caller counts it itself), never sent into the void unseen."""
    spec = LinkSpec(endpoint=inproc_endpoint(), pattern="pubsub", mode="live")
    stats = StageStats("tx", "grab", WallClock())
    tx = Sender(zmq_ctx, "link", spec, "tx", WallClock(), stats, count_drops=count_drops)
    sub = zmq_ctx.socket(zmq.SUB)
    try:
        assert not tx.send(make_frame(0, (4, 4), 1)) and tx.last_drop == "no_consumer"
        sub.connect(spec.endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        assert tx.wait_for_consumers(1, 5) and tx.consumers == 1
        assert tx.send(make_frame(1, (4, 4), 1))
        assert sub.poll(5000) and sub.recv_multipart()[0] == b"s"
        sub.setsockopt(zmq.UNSUBSCRIBE, b"")
        refused, deadline = 1, time.monotonic() + 5
        while time.monotonic() < deadline:  # the unsubscription arrives asynchronously
            if not tx.send(make_frame(2, (4, 4), 1)):
                refused += 1
                break
            time.sleep(0.001)
        assert refused == 2 and tx.consumers == 0 and tx.last_drop == "no_consumer"
        assert stats.drops["no_consumer"] == (refused if count_drops else 0)
        assert tx.link_seq == tx.stream_seq["s"] >= 1  # refused frames take no link_seq
    finally:
        sub.close(linger=0)
        tx.close()
