"""A receiver's in-order fast branch (`Receiver._accept` following each stream's last sender)
counts exactly what the general bookkeeping counts: restarts, gaps, refusals, epochs, senders
sharing a stream, ids with "/" in them, entries forgotten at MAX_TRACKED."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream import transport
from stream.clock import FakeClock
from stream.codec import encode_frame
from stream.frame import Frame
from stream.stats import StageStats
from stream.transport import LinkSpec, Receiver

SENDERS = ["grab", "grab/a"]
STREAMS = ["s", "a/s", "t"]  # ("grab/a", "s") and ("grab", "a/s") share the key "grab/a/s"
DELTAS = [1] * 8 + [0, 2, 3, -1, -5, 9_000, 30_000]  # mostly in order; repeats, gaps, restarts


class _NoLanes(dict):
    """A lane table that never keeps one: its receiver always takes the general bookkeeping."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


@contextmanager
def receivers(pattern: str) -> Iterator[tuple[Receiver, Receiver]]:
    """A receiver with its fast branch and one without, on unconnected lossless links (fed by
    hand: no watchdog thread), sharing one clock that never moves (the same gap credit)."""
    ctx = zmq.Context()
    clock = FakeClock()
    made = []
    try:
        for i in range(2):
            spec = LinkSpec(endpoint=f"inproc://lanes-{i}", pattern=pattern, mode="lossless")  # type: ignore[arg-type]
            made.append(Receiver(ctx, "l", spec, "rx", clock, StageStats("rx", "infer", clock)))
        made[1]._lanes = _NoLanes()
        yield made[0], made[1]
    finally:
        for rx in made:
            rx.close()
        ctx.destroy(linger=0)


def message(
    sender: str, stream: str, epoch: int, link_seq: int, seq: int, sent_ns: int = 1
) -> list:
    frame = Frame(stream, seq, 1, 2, np.zeros((2, 2), np.uint8), "gray8", epoch=epoch)
    return encode_frame(frame, sender, link_seq, sent_ns)


def state(rx: Receiver) -> dict[str, Any]:
    return {
        "drops": dict(rx._drops), "counts": dict(rx._counts), "epochs": dict(rx.epochs),
        "seq_high": dict(rx.seq_high), "arrived": {k: list(v) for k, v in rx.arrived.items()},
        "last_link_seq": dict(rx.last_link_seq), "credit": rx.gaps.credit,
    }


steps = st.lists(
    st.tuples(
        st.integers(0, len(SENDERS) - 1), st.integers(0, len(STREAMS) - 1), st.integers(0, 2),
        st.sampled_from(DELTAS), st.sampled_from(DELTAS), st.integers(0, 3),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, pattern=st.sampled_from(["pubsub", "pushpull"]), tracked=st.sampled_from([2, 3, 64]))
def test_the_fast_branch_counts_what_the_general_bookkeeping_counts(
    steps: list[tuple[int, int, int, int, int, int]], pattern: str, tracked: int
) -> None:
    """Each step: a frame of (sender, stream, epoch) with `link_seq` and `seq` moved by the
    deltas, then `then` more in order."""
    link_seqs: Counter[tuple[str, str]] = Counter()
    seqs: Counter[tuple[str, int]] = Counter()
    with pytest.MonkeyPatch.context() as mp, receivers(pattern) as (fast, general):
        mp.setattr(transport, "MAX_TRACKED", tracked)  # 2, 3: entries forgotten all the time
        for s, t, epoch, link_delta, seq_delta, then in steps:
            sender, stream = SENDERS[s], STREAMS[t]
            for link_step, seq_step in [(link_delta, seq_delta)] + [(1, 1)] * then:
                link_seqs[sender, stream] = max(0, link_seqs[sender, stream] + link_step)
                seqs[stream, epoch] = max(0, seqs[stream, epoch] + seq_step)
                link_seq, seq = link_seqs[sender, stream], seqs[stream, epoch]
                parts = message(sender, stream, epoch, link_seq, seq)
                got = fast._accept(parts, fast._drops, fast._counts)
                want = general._accept(parts, general._drops, general._counts)
                assert (got is None) == (want is None)
                assert state(fast) == state(general)


def test_in_order_frames_take_the_fast_branch_and_a_gap_leaves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    general = []
    real = Receiver._accept_frame

    def counted(self: Receiver, msg: Any, *rest: Any) -> Any:
        general.append(msg.header.seq)
        return real(self, msg, *rest)

    monkeypatch.setattr(Receiver, "_accept_frame", counted)
    with receivers("pubsub") as (rx, _):
        for seq in [1, 2, 3, 4, 6, 7, 8]:  # link_seq follows seq: 5 lost on the link
            assert rx._accept(message("grab", "s", 0, seq, seq), rx._drops, rx._counts)
        assert general == [1, 6]  # the first frame, and the one after the gap
        assert rx._drops == {("overflow", "s"): 1}
        assert rx.arrived == {"s@0": [8, 1, 8]} and rx.seq_high == {"s@0": 8}
        assert rx.last_link_seq == {"grab/s": 8}


def test_two_senders_whose_keys_coincide_are_counted_as_the_general_bookkeeping_counts() -> None:
    # "grab/a" + "s" and "grab" + "a/s": one `last_link_seq` entry, "grab/a/s"
    sent = [("grab/a", "s", 1), ("grab/a", "s", 2), ("grab", "a/s", 1), ("grab/a", "s", 3)]
    with receivers("pubsub") as (fast, general):
        for sender, stream, n in sent:
            for rx in (fast, general):
                assert rx._accept(message(sender, stream, 0, n, n), rx._drops, rx._counts)
        assert state(fast) == state(general)
        assert fast._drops == {("overflow", "s"): 1}  # link_seq 3 after the shared entry's 1


def test_a_stream_whose_entries_were_forgotten_starts_over_as_the_general_bookkeeping_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "MAX_TRACKED", 2)
    # t's second epoch pushes s@0 out of `seq_high` and `arrived`, not s out of the lanes
    sent = [("s", 0, 1), ("s", 0, 2), ("t", 0, 1), ("t", 1, 2), ("s", 0, 3)]
    with receivers("pubsub") as (fast, general):
        for stream, epoch, n in sent:
            for rx in (fast, general):
                assert rx._accept(message("grab", stream, epoch, n, n), rx._drops, rx._counts)
            assert state(fast) == state(general)
        assert fast.arrived == {"t@1": [1, 2, 2], "s@0": [1, 3, 3]}  # s@0 counted afresh
        assert fast.seq_high == {"t@1": 2, "s@0": 3}


def test_frames_in_are_counted_per_stream_and_their_queue_time_recorded_as_stats_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream import stats as stats_module
    from stream.stats import OTHER_STREAM, QUEUE_MS

    monkeypatch.setattr(stats_module, "MAX_STREAMS", 2)  # s2 and s3 counted under OTHER_STREAM
    ctx = zmq.Context()
    clock = FakeClock()
    spec = LinkSpec(
        endpoint="inproc://in-counts", pattern="pushpull", mode="lossless", bind="consumer"
    )
    stats = StageStats("rx", "infer", clock)
    rx = Receiver(ctx, "l", spec, "rx", clock, stats)
    push = ctx.socket(zmq.PUSH)
    try:
        push.connect(spec.endpoint)
        sent = ["s0", "s1", "s0", "s2", "s3", "s2", "s1"]
        for i, stream in enumerate(sent):
            push.send_multipart(message("grab", stream, 0, i + 1, i + 1, clock.now_ns()))
            clock.advance_ms(2)  # queued 2 ms
            got = rx.recv(2000)
            assert got is not None and got.frame is not None and got.frame.stream == stream
        assert stats.counters["in"] == len(sent)
        per = {name: s.counters["in"] for name, s in stats.streams.items()}
        assert per == {"s0": 2, "s1": 2, OTHER_STREAM: 3}
        hist = stats.hists[QUEUE_MS]
        assert hist.count == len(sent) and hist.min_ms == hist.max_ms == pytest.approx(2.0)
    finally:
        push.close(linger=0)
        rx.close()
        ctx.destroy(linger=0)
