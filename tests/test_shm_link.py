"""Links through shared memory: only headers on the socket, views of the slots, safe reuse."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream import shm_ring
from stream.clock import WallClock
from stream.spec import ConfigError, parse_spec
from stream.stats import StageStats
from stream.transport import LinkSpec, Receiver, Sender

from .helpers import LinkEnds, make_frame, open_link
from .test_transport import run_pair

pytestmark = pytest.mark.skipif(
    not shm_ring.supported(), reason="needs Linux OFD locks and /dev/shm"
)


def ipc_link(tmp_path: Path, **extra) -> LinkSpec:
    return LinkSpec(endpoint=f"ipc://{tmp_path}/l.ipc", pattern="pubsub", mode="live", **extra)


def test_auto_means_live_ipc_links_only(tmp_path: Path) -> None:
    assert ipc_link(tmp_path).uses_shm
    assert not ipc_link(tmp_path, shm="off").uses_shm
    assert not LinkSpec(endpoint="tcp://127.0.0.1:5555").uses_shm
    assert LinkSpec(endpoint="tcp://127.0.0.1:5555", shm="on").uses_shm
    assert not LinkSpec(endpoint=f"ipc://{tmp_path}/x", mode="lossless").uses_shm
    with pytest.raises(ConfigError, match="shm"):
        parse_spec(
            LinkSpec, {"endpoint": "ipc:///tmp/x", "mode": "lossless", "shm": "on"}, "links.a"
        )


def _pair(ctx: zmq.Context, spec: LinkSpec) -> LinkEnds:
    ends = open_link(ctx, spec)
    assert ends.tx.wait_for_consumers(1, 10)
    return ends


def _recv(rx: Receiver):
    msg = rx.recv(2000)
    assert msg is not None and msg.frame is not None
    return msg.frame


def test_frames_arrive_as_read_only_views_and_reuse_never_tears(
    tmp_path: Path, zmq_ctx: zmq.Context
) -> None:
    """The receiver keeps more frames than the ring has slots: the sender must never overwrite
    a slot still in use; it sends inline instead (counted), and every kept frame stays intact."""
    spec = ipc_link(tmp_path, shm_slots=3)
    ends = _pair(zmq_ctx, spec)
    tx, rx, tx_stats, rx_stats = ends.tx, ends.rx, ends.tx_stats, ends.rx_stats
    kept = []
    try:
        for seq in range(8):
            frame = make_frame(seq, (256, 320), time.time_ns())
            frame.parts["mask"] = np.full((256, 320), 200 - seq, np.uint8)
            assert tx.send(frame)
            kept.append(_recv(rx))
        assert not kept[0].image.flags.writeable
        for seq, f in enumerate(kept):
            assert f.seq == seq
            assert (f.image == seq).all() and (f.parts["mask"] == 200 - seq).all()
        assert tx_stats.counters["shm_inline"] == 8 - 3
        assert rx.shm is not None and rx.shm.reader.held() == 3
        kept.clear()
        assert rx.shm.reader.held() == 0
        assert tx.send(make_frame(99, (256, 320), time.time_ns()))
        assert _recv(rx).seq == 99
        assert tx_stats.counters["shm_inline"] == 5  # slots free again: back in shared memory
        assert not rx_stats.drops
    finally:
        ends.close()


def test_only_the_header_travels_on_the_socket(tmp_path: Path, zmq_ctx: zmq.Context) -> None:
    spec = ipc_link(tmp_path)
    clock = WallClock()
    tx = Sender(zmq_ctx, "link", spec, "tx", clock, StageStats("tx", "grab", clock))
    sub = zmq_ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(spec.endpoint)
    try:
        assert tx.wait_for_consumers(1, 10)
        tx.send(make_frame(1, (1080, 1920, 3), time.time_ns()))
        assert sub.poll(5000)
        parts = sub.recv_multipart()
        header = json.loads(parts[1])
        assert len(parts) == 2 and set(header["shm"]) == {"ring", "slot", "gen", "offsets"}
        assert Path(shm_ring.RING_DIR, header["shm"]["ring"]).exists()
    finally:
        tx.close()
        sub.close()
    assert not Path(shm_ring.RING_DIR, header["shm"]["ring"]).exists()  # unlinked at close


def test_shm_off_sends_inline(tmp_path: Path, zmq_ctx: zmq.Context) -> None:
    ends = _pair(zmq_ctx, ipc_link(tmp_path, shm="off"))
    tx, rx = ends.tx, ends.rx
    try:
        assert tx.shm is None
        tx.send(make_frame(3, (64, 64), time.time_ns()))
        f = _recv(rx)
        assert f.seq == 3 and (f.image == 3).all()
    finally:
        ends.close()


@pytest.mark.slow
def test_slow_consumer_over_shm_gets_fresh_frames_all_accounted(tmp_path: Path) -> None:
    """1080p at 60 fps between processes, consumer taking 50 ms a frame."""
    spec = ipc_link(tmp_path)
    n = 120
    got, stats, producer_drops = run_pair(spec, n, 60.0, (1080, 1920, 3), work_s=0.05)
    ages = [age for _, age in got][5:]
    assert len(got) >= 15
    assert max(ages) < 50 + 16.7 + 40, sorted(ages)[-5:]
    dropped = sum(stats.drops.values()) + sum(producer_drops.values())
    assert len(got) + dropped == n, (len(got), dict(stats.drops), producer_drops)


def test_an_overwritten_frame_is_one_drop_not_also_a_sequence_gap(
    tmp_path: Path, zmq_ctx: zmq.Context
) -> None:

    from stream.codec import encode_frame
    from stream.shm_link import ShmSender

    spec = LinkSpec(endpoint=f"ipc://{tmp_path}/l.ipc", mode="lossless")  # fed by hand
    clock = WallClock()
    rx = Receiver(zmq_ctx, "link", spec, "rx", clock, StageStats("rx", "infer", clock))
    tx = ShmSender("tx", 2, lambda: None)
    drops, counts = rx._drops, rx._counts  # a lossless receiver's own tallies (no thread)

    def message(seq: int) -> list:
        return encode_frame(make_frame(seq, (32, 32), 1), "tx", seq + 1, 1, tx.write)

    try:
        first = rx._accept(message(0), drops, counts)
        assert first is not None and rx._bind(first) is not None  # taken and let go at once
        m1, m2 = message(1), message(2)
        message(3)  # two slots: this reuses frame 1's slot before the receiver got to it
        p1, p2 = rx._accept(m1, drops, counts), rx._accept(m2, drops, counts)
        assert p1 is not None and p2 is not None  # headers fine; link_seq 1, 2, 3: no gap
        assert rx._bind(p1) is None and rx._bind(p2) is not None
        assert not drops and dict(rx.stats.drops) == {"shm_overwritten": 1}
        assert rx.stats.counters["in"] == 3  # arrived, one of them then dropped
    finally:
        tx.close()
        rx.close()
