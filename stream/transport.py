"""Links between stages: ZeroMQ sockets configured by endpoint, pattern and mode.

- pattern `pubsub` (fan-out: every consumer gets every frame) or `pushpull` (work sharing).
- mode `live`: bounded queues and the receiver drains to the newest frame, so latency never piles
  up behind a slow consumer; every frame skipped is counted as an `overflow` drop.
  mode `lossless`: blocking, nothing dropped (the sender waits for the slowest consumer).

The producer side of a pubsub link is an XPUB socket, so it knows how many consumers are
subscribed: frames published to nobody are counted (`no_consumer`), not silently lost. Every
message carries the sender's per-link sequence number (`link_seq`); a subscriber that sees a gap
counts the frames its queue lost as `overflow` too.

Live links between stages on one host move the pixels through a shared-memory ring
(`stream.shm_link`; `shm: auto` turns it on for `ipc://` endpoints): ZeroMQ carries only the
header. A frame whose slot was reused before the receiver got to it is an `shm_overwritten` drop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import zmq
from zmq.utils.monitor import parse_monitor_message

from .clock import CLOCK_TOLERANCE_MS, Clock
from .codec import (
    KIND_EOS,
    DecodeError,
    EndOfStream,
    Message,
    Parsed,
    PayloadGone,
    bind,
    encode_eos,
    encode_frame,
    parse,
)
from .frame import Frame
from .gap_budget import GapBudget
from .histogram import Histogram
from .shm_link import ShmReceiver, ShmSender
from .shm_ring import supported as shm_supported
from .spec import ConfigError, bounded, section
from .stats import QUEUE_MS, StageStats
from .wire_header import FrameHeader

LIVE_HWM = 2
LOSSLESS_HWM = 1000
LOSSLESS_LINGER_S = 10.0  # a stage's lossless link, at its close: how long queued frames may take
MAX_DRAIN = 10_000  # messages read in one live drain before the newest is used
WATCH_S = 0.05  # a live receiver's `recv` looks at connection events this often
BUSY_WATCH_S = 0.005  # its watchdog drains the socket this often while the stage is away (busy)
IDLE_WATCH_S = 0.5  # and looks at most this rarely while the stage keeps coming straight back
LIVE_RCVHWM = 16  # a live receiver's queue: what arrives between two drains, with room to spare
RECONNECT_AFTER_S = 0.3  # a dropped connection ZeroMQ does not retry by then is connected again
MAX_TRACKED = 64  # senders, streams, epochs remembered per receiver (oldest forgotten first)
# pyzmq's flags as plain ints: its enum members cost a Python call on every `|` and `&`
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_NOBLOCK, _SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)
_zmq_poll = zmq.zmq_poll

log = logging.getLogger("medstream.transport")


@dataclass
class LinkSpec:
    """One `links:` entry of a pipeline config."""

    endpoint: str = bounded("", doc="tcp://HOST:PORT or ipc://PATH ({run_dir} is expanded)")
    pattern: Literal["pubsub", "pushpull"] = bounded(
        "pubsub", doc="pubsub: fan-out; pushpull: work sharing"
    )
    mode: Literal["live", "lossless"] = bounded(
        "live", doc="live: newest frame wins; lossless: block, drop nothing"
    )
    bind: Literal["producer", "consumer"] = bounded("producer", doc="which side binds the endpoint")
    hwm: int = bounded(
        0,
        0,
        1_000_000,
        doc="frames a sender queues per peer; 0: 2 when live, 1000 when lossless (a live "
        "receiver queues at least 16 between its drains; a lossless receiver as many as this: "
        "1000 frames of 1080p BGR are about 6 GB on each side)",
    )
    max_message_mb: float = bounded(
        256.0, 0.001, 4096.0, doc="largest message part a receiver accepts"
    )
    shm: Literal["auto", "on", "off"] = bounded(
        "auto",
        doc="pixels through a shared-memory ring, ZeroMQ carrying only headers (same host, "
        "live links); auto: on for live ipc:// links where supported and CURVE is off",
    )
    shm_slots: int = bounded(8, 2, 64, doc="frame slots in the shared-memory ring")
    allow: list[str] = section(
        list,
        "CURVE: public keys (names in security.keys_dir, or .key files) allowed to connect; "
        "default: the stages that connect to this link",
    )

    def validate(self, where: str) -> None:
        if not self.endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(
                f"{where}.endpoint: expected tcp://, ipc:// or inproc://, got {self.endpoint!r}"
            )
        if self.shm == "on" and self.mode != "live":
            raise ConfigError(f"{where}.shm: 'on' needs mode: live (a lossless link is inline)")
        if self.shm == "on" and not shm_supported():
            raise ConfigError(f"{where}.shm: shared memory needs Linux and /dev/shm; use auto or off")

    @property
    def uses_shm(self) -> bool:
        """Whether the producer puts frames in a shared-memory ring."""
        if self.mode != "live" or self.shm == "off":
            return False
        return self.shm == "on" or (self.endpoint.startswith("ipc://") and shm_supported())

    @property
    def queue(self) -> int:
        if self.hwm:
            return self.hwm
        return LIVE_HWM if self.mode == "live" else LOSSLESS_HWM


class LinkError(RuntimeError):
    """A link endpoint that cannot be bound or connected; the message says which and why."""


class SocketGuard(Protocol):
    """Secures a socket before it binds or connects (CURVE: `stream.security.Security`)."""

    def secure(self, sock: zmq.Socket, link: str, binds: bool) -> None: ...


def ensure_ipc_dir(endpoint: str) -> None:
    """Create the folder an `ipc://` endpoint's socket file goes in (other endpoints: nothing)."""
    if endpoint.startswith("ipc://"):
        Path(endpoint[len("ipc://") :]).parent.mkdir(parents=True, exist_ok=True)


def _attach(
    sock: zmq.Socket, spec: LinkSpec, producer: bool, link: str, guard: SocketGuard | None
) -> None:
    binds = (spec.bind == "producer") == producer
    if guard is not None:
        try:
            guard.secure(sock, link, binds)
        except BaseException:
            sock.close(linger=0)
            raise
    try:
        if binds:
            ensure_ipc_dir(spec.endpoint)
            sock.bind(spec.endpoint)
        else:
            sock.connect(spec.endpoint)
    except (zmq.ZMQError, OSError) as e:
        sock.close(linger=0)
        verb = "bind" if binds else "connect to"
        raise LinkError(f"cannot {verb} {spec.endpoint}: {e}") from None


def _never() -> bool:
    return False


def _remember(d: dict, key: object, value: object) -> bool:
    """Set `d[key]`, forgetting the oldest entry when `d` would exceed MAX_TRACKED; True if
    one was forgotten."""
    forgot = key not in d and len(d) >= MAX_TRACKED
    if forgot:
        del d[next(iter(d))]
    d[key] = value
    return forgot


class _Lane:
    """What a live receiver's in-order fast branch needs of the last frame of one stream from
    one sender: a copy of the general bookkeeping's entries (`epochs`, `last_link_seq`,
    `seq_high`) and the `arrived` entry itself, valid while no other message of the stream
    changed them and nothing was forgotten (see `Receiver._accept`)."""

    __slots__ = ("sender", "epoch", "link_seq", "high", "sender_key", "at", "arrived")

    def __init__(
        self, sender: str, epoch: int, link_seq: int, high: int, sender_key: str, at: str,
        arrived: list[int],
    ):
        self.sender, self.epoch, self.link_seq, self.high = sender, epoch, link_seq, high
        self.sender_key, self.at, self.arrived = sender_key, at, arrived


def _readable(sock: zmq.Socket) -> bool:
    """Whether a message waits on `sock` (checked without raising zmq.Again)."""
    return sock.get(_EVENTS) & _POLLIN != 0  # type: ignore[operator]  # EVENTS is an int


_SEND = zmq.backend.Socket.send  # pyzmq's own send, without the wrapper for SERVER / RADIO sockets


def _send_all(sock: zmq.Socket, parts: list, flags: int) -> None:
    """`send_multipart` of the codec's parts without its per-part type check, each part
    zero-copy (pyzmq copies one under its copy_threshold, 64 KiB: topic and header). Atomic as
    a multipart message is: once its first part is queued, ZeroMQ queues the rest."""
    more = flags | _SNDMORE
    send = _SEND
    for part in parts[:-1]:
        send(sock, part, more, False)
    send(sock, parts[-1], flags, False)


def _poll_in(sock: zmq.Socket, timeout_ms: int) -> bool:
    """Wait up to `timeout_ms` for a message on `sock`: `sock.poll` without the Poller object
    it builds on every call (a receiver waits once per frame)."""
    return bool(_zmq_poll([(sock, _POLLIN)], timeout_ms))


def _recv_all(sock: zmq.Socket, flags: int = 0) -> list[zmq.Frame]:
    """`recv_multipart(copy=False)` reading each frame's `more` flag instead of asking the
    socket for RCVMORE after every part."""
    part = sock.recv(flags, copy=False)
    parts = [part]
    while part.more:
        part = sock.recv(flags, copy=False)
        parts.append(part)
    return parts


def count_subscriptions(sock: zmq.Socket, current: int) -> int:
    """`current` updated by the (un)subscriptions waiting on an XPUB_VERBOSER socket
    (read without blocking): how many subscribers it has now."""
    while _readable(sock):  # no zmq.Again raised per send when none waits
        msg = sock.recv(zmq.NOBLOCK)
        if msg[:1] == b"\x01":
            current += 1
        elif msg[:1] == b"\x00":
            current = max(0, current - 1)
    return current


class Sender:
    """The producing end of a link. `send` never blocks on a live link."""

    def __init__(
        self,
        ctx: zmq.Context,
        name: str,
        spec: LinkSpec,
        stage_id: str,
        clock: Clock,
        stats: StageStats,
        should_stop: Callable[[], bool] = _never,
        guard: SocketGuard | None = None,
        count_drops: bool = True,
    ):
        self.name = name
        self.spec = spec
        self.stage_id = stage_id
        self.clock = clock
        self.stats = stats
        self.should_stop = should_stop
        self.count_drops = count_drops  # False: the caller counts a refused frame itself
        self.link_seq = 0  # frames sent on this link, all streams
        self.stream_seq: dict[str, int] = {}  # per stream: the `link_seq` on the wire
        self.last_drop = ""  # reason the last frame `send` refused was dropped
        self.consumers = 0
        self.pubsub = spec.pattern == "pubsub"
        self.sock = ctx.socket(zmq.XPUB if self.pubsub else zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, spec.queue)
        self.sock.setsockopt(zmq.LINGER, 1000)
        if self.pubsub:
            self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # see every (un)subscription
            if spec.mode == "lossless":
                self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        elif spec.mode == "live":
            self.sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue to a peer not yet connected
        _attach(self.sock, spec, True, name, guard)
        self.shm: ShmSender | None = None
        if spec.uses_shm and (guard is None or spec.shm == "on"):  # CURVE: auto means inline
            self.shm = ShmSender(f"{stage_id}-{name}", spec.shm_slots, self._count_inline)
        self._shm_write = self.shm.write if self.shm is not None else None  # encode_frame's

    def _count_inline(self) -> None:
        self.stats.count("shm_inline")  # every ring slot still held by a reader: sent inline

    def _track_subscriptions(self) -> None:
        self.consumers = count_subscriptions(self.sock, self.consumers)

    def wait_for_consumers(self, n: int, timeout_s: float) -> bool:
        """Wait until `n` consumers subscribed (pubsub only; pushpull returns True)."""
        if not self.pubsub:
            return True
        end = time.monotonic() + timeout_s
        while True:
            self._track_subscriptions()
            if self.consumers >= n:
                return True
            if time.monotonic() >= end or self.should_stop():
                return False
            self.sock.poll(50, zmq.POLLIN)

    def _send_parts(self, parts: list) -> bool:
        """Hand parts to ZeroMQ; on a full lossless link wait until it has room (`_send_later`)."""
        try:
            _send_all(self.sock, parts, _NOBLOCK)
            return True
        except zmq.Again:
            return self._send_later(parts)

    def _send_later(self, parts: list) -> bool:
        """Parts a full queue refused: a live link gives up (False); a lossless one waits until
        it has room (or the stage is stopped), asleep in `poll`, not polling: the consumer may
        need the CPU."""
        while self.spec.mode != "live" and not self.should_stop():
            if self.pubsub:  # XPUB reports POLLOUT even when full
                time.sleep(0.0005)
            else:
                self.sock.poll(50, zmq.POLLOUT)
            try:
                _send_all(self.sock, parts, _NOBLOCK)
                return True
            except zmq.Again:
                pass
        return False

    def _refuse(self, reason: str) -> bool:
        """A frame `send` did not send: remembered and (unless the caller does) counted."""
        self.last_drop = reason
        if self.count_drops:
            self.stats.drop(reason)
        return False

    def send(self, frame: Frame) -> bool:
        """Send a frame; False if it was dropped (and counted) instead.

        The per-frame path of every producer: helpers called only when needed (`_readable`,
        `_send_parts` inlined: each Python call costs microseconds on a cold cache)."""
        sock = self.sock
        if self.pubsub:
            if sock.get(_EVENTS) & _POLLIN:  # type: ignore[operator]  # (un)subscriptions waiting
                self._track_subscriptions()
            if self.consumers == 0:
                return self._refuse("no_consumer")
        stream = frame.stream
        link_seq = self.stream_seq.get(stream, 0) + 1
        parts = encode_frame(frame, self.stage_id, link_seq, self.clock.now_ns(), self._shm_write)
        try:
            _send_all(sock, parts, _NOBLOCK)
        except zmq.Again:
            if not self._send_later(parts):
                return self._refuse("overflow" if self.spec.mode == "live" else "shutdown")
        self.link_seq += 1
        if stream in self.stream_seq:  # the common case, without `_remember`'s call
            self.stream_seq[stream] = link_seq
        else:
            _remember(self.stream_seq, stream, link_seq)
        return True

    def send_eos(self, eos: EndOfStream, repeats: int = 3) -> None:
        """Tell consumers the stream ended. Repeated (receivers ignore duplicates) because a
        live link may drop one; an eos does not advance `link_seq`. A lossless link waits for
        room and sends it once, like a frame."""
        last = self.stream_seq.get(eos.stream, 0)
        if self.spec.mode == "lossless":
            self._send_parts(encode_eos(eos, self.stage_id, last, self.clock.now_ns()))
            return
        for i in range(repeats):
            if self.pubsub:
                self._track_subscriptions()
            parts = encode_eos(eos, self.stage_id, last, self.clock.now_ns())
            try:
                self.sock.send_multipart(parts, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
            if i + 1 < repeats:
                time.sleep(0.02)

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket; `linger_ms` (-1: until delivered) replaces the 1 s ZeroMQ gives
        queued frames at the context's `term` (a signal cuts that wait short)."""
        self.sock.close(linger=linger_ms)
        if self.shm is not None:
            self.shm.close()


class Receiver:
    """The consuming end of a link.

    live: `recv` reads every message waiting on the socket in the caller's thread, checks each
    header and keeps only the newest frame of each stream, undecoded, in a mailbox with one slot
    per stream (a fast stream never pushes a slow one's frame out); it hands on the frame that
    has waited longest (so streams take turns) and binds only its payload (only the frame used
    is read from shared memory). While the stage is away from `recv` (processing a frame), a
    watchdog thread drains the socket the same way every BUSY_WATCH_S, so kernel and ZeroMQ
    buffers never hold a backlog; while the stage keeps coming straight back to `recv` the
    watchdog looks ever more rarely (up to IDLE_WATCH_S), since `recv` drains the socket
    itself. Frames replaced in the mailbox are counted as `overflow` drops of their stream.
    lossless: `recv` reads the socket in order.

    What arrived is kept per `stream@epoch` in the stage's `info["arrived"]` ([frames, lowest
    seq, highest seq]; frames = received + lost on the link): the run report accounts for a
    producer that sends no stats (a foreign one, or a grab whose stats never came) from it.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        name: str,
        spec: LinkSpec,
        stage_id: str,
        clock: Clock,
        stats: StageStats,
        topic: str = "",
        drop_prefix: str = "",
        guard: SocketGuard | None = None,
        should_stop: Callable[[], bool] = _never,
    ):
        self.name = name
        self.spec = spec
        self.stage_id = stage_id
        self.clock = clock
        self.stats = stats
        self.should_stop = should_stop  # a stage being stopped expects its peers to go away
        self.drop_prefix = drop_prefix  # e.g. "overlay:" for a link whose frames are not the video
        self.pubsub = spec.pattern == "pubsub"
        self.live = spec.mode == "live"
        self.sock = ctx.socket(zmq.SUB if self.pubsub else zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, max(spec.queue, LIVE_RCVHWM) if self.live else spec.queue)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, int(spec.max_message_mb * 1024 * 1024))
        if self.pubsub:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        # ZeroMQ refuses a part over max_message_mb by dropping the connection: watch for that
        # (a CURVE socket is watched by the process's AuthWatch instead: one monitor a socket)
        self._monitor = (
            self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
            if guard is None
            else None
        )
        self._lost_at: float | None = None  # a connection dropped, no retry seen yet
        self._monitor_due = 0.0  # live: when `recv` looks at the monitor next
        _attach(self.sock, spec, False, name, guard)
        # link bookkeeping, each bounded to MAX_TRACKED entries (the ids come off the wire)
        shm_ok = shm_supported() and (guard is None or spec.shm == "on")
        self.shm = ShmReceiver() if shm_ok else None
        self._shm_read = self.shm.read if self.shm is not None else None
        self.last_link_seq: dict[str, int] = {}
        self.epochs: dict[str, int] = {}
        self.eos_seen: dict[tuple[str, int], bool] = {}
        self.seq_high: dict[str, int] = {}  # "stream@epoch" -> highest frame seq seen
        self.arrived: dict[str, list[int]] = {}  # "stream@epoch" -> [frames, seq lo, seq hi]
        self._lanes: dict[str, _Lane] = {}  # stream -> its last sender's, for in-order frames
        self.gaps = GapBudget(clock)
        self._disconnect_logged = False
        self._disconnect_unsaid = False  # a loss to log once what arrived before it is read
        # socket and mailbox (live): held by `recv` while it reads or waits, by the watchdog
        # while it drains; link bookkeeping and counts change only under it
        self._lock = threading.Lock()
        self._newest: dict[str, Parsed] = {}  # stream -> its newest frame, longest waiting first
        self._eos: deque[Parsed] = deque()
        self._drops: Counter[tuple[str, str]] = Counter()  # (reason, stream or "")
        self._counts: Counter[str] = Counter()
        self._in_counters: dict[str, Counter[str]] = {}  # stream -> its stats counters
        self._queue_hist: Histogram | None = None  # the stats' QUEUE_MS histogram, once made
        self._closing = threading.Event()
        self._left_at = time.monotonic()  # when `recv` last returned (monotonic s)
        self._entered_at = self._left_at  # when the stage last called `recv`
        self._away_s = 0.0  # how long the stage was away from `recv` before its last call
        self._thread: threading.Thread | None = None
        stats.snapshot_hooks.append(self._note_arrivals)
        if self.live:
            self._thread = threading.Thread(
                target=self._watch, name=f"{stage_id}:{name}", daemon=True
            )
            self._thread.start()

    def _accept(
        self, parts: list, drops: Counter[tuple[str, str]], counts: Counter[str]
    ) -> Parsed | None:
        """Check one message's header and do the link bookkeeping; None if it was refused
        (counted in `drops` / `counts`)."""
        try:
            msg = parse(parts)
        except DecodeError as e:
            drops[(f"invalid:{e.reason}", "")] += 1
            return None
        except Exception:  # a decoder bug must not kill the receiver: count it, go on
            drops[("invalid:decoder_error", "")] += 1
            return None
        h = msg.header
        if msg.kind == KIND_EOS:
            key = (h.stream, h.epoch)
            if key in self.eos_seen:
                counts["eos_repeats"] += 1
                return None
            _remember(self.eos_seen, key, True)
            counts["eos"] += 1
            return msg
        lane = self._lanes.get(h.stream)
        if (
            lane is not None
            and h.seq == lane.high + 1  # type: ignore[union-attr]  # a frame's header
            and h.epoch == lane.epoch
            and h.sender == lane.sender
            and (h.link_seq == lane.link_seq + 1 or not self.pubsub)
        ):
            # for speed, the common case: the next frame of the sender and stream the lane
            # follows, nothing lost; of the general bookkeeping below it changes only these
            seq = h.seq  # type: ignore[union-attr]
            lane.high = self.seq_high[lane.at] = seq
            if self.pubsub:
                lane.link_seq = self.last_link_seq[lane.sender_key] = h.link_seq
            got = lane.arrived
            got[0] += 1
            got[2] = seq
            return msg
        return self._accept_frame(msg, drops, counts)

    def _accept_frame(
        self, msg: Parsed, drops: Counter[tuple[str, str]], counts: Counter[str]
    ) -> Parsed | None:
        """`_accept` of any frame (the general bookkeeping); the stream's lane follows its
        sender from here."""
        h = msg.header
        assert isinstance(h, FrameHeader)
        stream = h.stream
        self._lanes.pop(stream, None)  # what it copied may change now
        at = f"{stream}@{h.epoch}"
        sender = f"{h.sender}/{stream}"  # link_seq counts per sender and stream
        lost = self._sequence(h, at, sender, counts)
        if lost is None:
            drops[("invalid:implausible_gap", "")] += 1
            return None
        if lost:
            drops[("overflow", stream)] += lost
        seq = h.seq
        got = self.arrived.get(at)  # [frames, lowest seq, highest seq]
        if got is None:
            got = [1 + lost, seq, seq]
            self._keep(self.arrived, at, got)
        else:
            got[0] += 1 + lost
            if seq < got[1]:
                got[1] = seq
            elif seq > got[2]:
                got[2] = seq
        # no lane for ids with "/": their key may be another pair's too ("a/b" + "c", "a" + "b/c")
        if "/" not in h.sender and "/" not in stream:
            lane = _Lane(h.sender, h.epoch, h.link_seq, self.seq_high[at], sender, at, got)
            _remember(self._lanes, stream, lane)
        return msg

    def _keep(self, d: dict, key: object, value: object) -> None:
        """`_remember` for the bookkeeping the lanes copy: forgetting an entry forgets them."""
        if _remember(d, key, value):
            self._lanes.clear()

    def _sequence(self, h: FrameHeader, at: str, sender: str, counts: Counter[str]) -> int | None:
        """Per-sender (and stream: `sender`) sequence bookkeeping: restarts, the highest frame
        seq seen (per `at`: "stream@epoch"), and the frames lost on the link (a `link_seq`
        gap, pubsub); None if the jump is implausible."""
        stream, epoch, link_seq, seq = h.stream, h.epoch, h.link_seq, h.seq
        epochs = self.epochs
        if epochs.get(stream, epoch) != epoch:
            counts["stream_restarts"] += 1
            self.last_link_seq.pop(sender, None)
        high = self.seq_high.get(at)
        last = self.last_link_seq.get(sender) if self.pubsub else None
        lost = link_seq - last - 1 if last is not None and link_seq > last + 1 else 0
        seq_jump = seq - high - 1 if high is not None and seq > high + 1 else 0
        gap = lost if lost > seq_jump else seq_jump
        if gap and not self.gaps.spend(gap):
            if self.pubsub:  # resynchronise: the sender's next frame is judged from here
                self._keep(self.last_link_seq, sender, link_seq)
            return None
        self._keep(epochs, stream, epoch)
        self._keep(self.seq_high, at, seq if high is None or seq > high else high)
        if self.pubsub:
            if last is not None and link_seq <= last:
                counts["sender_restarts"] += 1
            self._keep(self.last_link_seq, sender, link_seq)
        return lost

    def _check_monitor(self) -> None:
        """Count (and log once) connections ZeroMQ dropped: a message part over
        max_message_mb, or a peer that went away. After a peer went away ZeroMQ retries the
        connection itself (`CONNECT_RETRIED`); after a protocol error (an oversized part) it
        gives up, so a connecting receiver that sees no retry soon connects again, once it
        has read what arrived before."""
        if self._monitor is None:
            return
        while True:
            try:
                if not _readable(self._monitor):  # the common case: no event, no zmq.Again
                    break
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            except (zmq.ZMQError, ValueError):
                self._monitor = None
                return
            if self._closing.is_set():
                continue
            if event["event"] == zmq.EVENT_CONNECT_RETRIED:
                self._lost_at = None
                continue
            self._lost_at = time.monotonic()
            self._counts["disconnects"] += 1
            self._disconnect_unsaid = not self._disconnect_logged
        if self._disconnect_unsaid and (self.eos_seen or not self.sock.poll(0, zmq.POLLIN)):
            # said once what arrived before the loss is read: an eos there means the peer ended;
            # a stage being stopped expects its peers to go away (the supervisor stops them all)
            self._disconnect_unsaid = False
            if not (self.eos_seen or self.should_stop()):
                self._disconnect_logged = True
                log.warning(
                    "%s: link %s lost a connection (a message part over max_message_mb=%g "
                    "refused, or the peer went away); further ones only counted (disconnects)",
                    self.stage_id, self.name, self.spec.max_message_mb,
                )
        if (
            self._lost_at is not None
            and time.monotonic() - self._lost_at > RECONNECT_AFTER_S
            and self.spec.bind == "producer"
            and not self._closing.is_set()
            and not self.sock.poll(0, zmq.POLLIN)  # what arrived before is read first
        ):
            self._lost_at = None
            try:
                self.sock.disconnect(self.spec.endpoint)  # the dead session
            except zmq.ZMQError:
                pass
            self.sock.connect(self.spec.endpoint)

    def _watch(self) -> None:
        """Live mode thread: drain the socket every BUSY_WATCH_S while the stage is away from
        `recv`. A stage found waiting in `recv` (one that came straight back to it, or has
        waited there longer than WATCH_S) drains the socket itself: each look finding it so
        doubles the wait, up to IDLE_WATCH_S (every wake of a thread costs CPU, tens of
        microseconds on a virtual machine's idle core)."""
        period = BUSY_WATCH_S
        while not self._closing.wait(period):
            if not self._lock.acquire(blocking=False):  # the stage is in `recv`
                # a stage that stays away long (a slow consumer) is soon away again: look
                # then, or the frames of its whole turn would wait in the socket's queue
                busy = (
                    self._away_s > BUSY_WATCH_S
                    and time.monotonic() - self._entered_at < WATCH_S  # not idle in `recv`
                )
                period = BUSY_WATCH_S if busy else min(2 * period, IDLE_WATCH_S)
                continue
            period = BUSY_WATCH_S
            try:
                self._check_monitor()
                self._drain()
            except zmq.ZMQError:
                return  # socket closed under us
            finally:
                self._lock.release()

    def _drain(self, ready: bool = False) -> None:
        """Read every message waiting (lock held; `ready`: a poll just saw one): check its
        header, keep the newest frame."""
        sock, newest = self.sock, self._newest
        for _ in range(MAX_DRAIN):
            try:
                if not ready and not _readable(sock):  # cheaper than zmq.Again
                    break
                ready = False
                parts = _recv_all(sock, _NOBLOCK)
            except zmq.Again:
                break
            msg = self._accept(parts, self._drops, self._counts)
            if msg is None:
                continue
            if msg.kind == KIND_EOS:
                self._eos.append(msg)
            elif not newest:  # for speed, the common case: `_post` to an empty mailbox
                newest[msg.header.stream] = msg
            else:
                self._post(msg.header.stream, msg)

    def _post(self, stream: str, msg: Parsed) -> None:
        """Put `msg` in its stream's mailbox slot (under the lock); a frame it replaces, or the
        longest-waiting one when more than MAX_TRACKED streams wait, is an overflow drop."""
        old = self._newest.get(stream)
        if old is None and len(self._newest) >= MAX_TRACKED:
            old = self._newest.pop(next(iter(self._newest)))
        if old is not None:
            self._overflow(old, self._drops, self._counts)
        self._newest[stream] = msg  # a replaced frame's slot keeps its place in the queue

    def _overflow(self, msg: Parsed, drops: Counter[tuple[str, str]], counts: Counter[str]) -> None:
        drops[("overflow", msg.header.stream)] += 1
        counts["in"] += 1

    def _flush_counts(self) -> None:
        if self._drops:
            for (reason, stream), n in self._drops.items():
                self.stats.drop(self.drop_prefix + reason, n, stream or None)
            self._drops.clear()
        if self._counts:
            for name, n in self._counts.items():
                self.stats.count(name, n)
            self._counts.clear()

    def _note_arrivals(self) -> None:
        """Bring the stage's `info` up to date with what arrived (a snapshot hook: the
        bookkeeping is copied when a snapshot is taken, not once a frame)."""
        with self._lock:
            if self.seq_high:
                high = self.stats.info.setdefault("seq_high", {})
                for key, seq in self.seq_high.items():
                    if seq > high.get(key, -1):
                        _remember(high, key, seq)
            if self.arrived and not self.drop_prefix:  # only the video's frames are accounted
                arrived = self.stats.info.setdefault("arrived", {})
                for key, got in self.arrived.items():
                    _remember(arrived, key, list(got))

    def _take(self) -> Parsed | None:
        """The end of a stream with no frame waiting, else the frame that waited longest."""
        if self._eos:
            for eos in self._eos:
                if eos.header.stream not in self._newest:
                    self._eos.remove(eos)
                    return eos
        if self._newest:
            return self._newest.pop(next(iter(self._newest)))
        return None

    def _bind(self, parsed: Parsed) -> Message | None:
        """The message with its payload (the caller's thread; counts straight into stats, a
        frame's time in the queue too)."""
        try:
            msg = bind(parsed, self._shm_read)
        except DecodeError as e:
            self.stats.drop(self.drop_prefix + f"invalid:{e.reason}")
            return None
        except PayloadGone as e:  # its slot was reused: a drop of a frame that did arrive
            self.stats.drop(self.drop_prefix + e.reason, stream=parsed.header.stream)
            self.stats.count("in")
            return None
        if msg.kind != KIND_EOS:
            self.stats.counters["in"] += 1  # `stats.count("in", stream)`, its call saved
            if not self.drop_prefix:
                stream = parsed.header.stream
                per = self._in_counters.get(stream)
                (per if per is not None else self._stream_counters(stream))["in"] += 1
            queue_ms = (self.clock.now_ns() - msg.sent_ns) / 1e6
            if queue_ms < -CLOCK_TOLERANCE_MS:  # received before it was sent: clocks disagree
                self.stats.count("clock_skew")
            else:  # `stats.observe(QUEUE_MS, queue_ms)`, its calls saved
                (self._queue_hist or self._queue_histogram()).record(queue_ms)
        return msg

    def _stream_counters(self, stream: str) -> Counter[str]:
        """The stats counters of `stream`, kept at hand for the next frame."""
        per = self.stats.stream(stream).counters
        _remember(self._in_counters, stream, per)
        return per

    def _queue_histogram(self) -> Histogram:
        """The stats' queue_ms histogram (made by the first frame), kept at hand."""
        hist = self._queue_hist = self.stats.hists.setdefault(QUEUE_MS, Histogram())
        return hist

    def recv(self, timeout_ms: int) -> Message | None:
        """The next message (frame or eos), or None after `timeout_ms` with nothing valid.

        A frame that arrived before an eos is returned before it."""
        if self.live:
            with self._lock:
                parsed = self._wait(timeout_ms)
                if self._drops or self._counts:
                    self._flush_counts()
            self._left_at = time.monotonic()
            return None if parsed is None else self._bind(parsed)
        msg = self._recv_in_order(timeout_ms)
        self._flush_counts()
        return msg

    def _wait(self, timeout_ms: int) -> Parsed | None:
        """Live (lock held): drain the socket, waiting for a message up to `timeout_ms`; the
        next message to hand on, or None."""
        now = self._entered_at = time.monotonic()
        self._away_s = now - self._left_at
        deadline = now + timeout_ms / 1000.0
        while True:
            if now >= self._monitor_due:  # connection events: seen within WATCH_S
                self._monitor_due = now + WATCH_S
                self._check_monitor()
            if self._newest or self._eos:  # kept by the watchdog: newer ones may wait behind
                self._drain()
                return self._take()
            remaining = deadline - now
            wait_ms = max(1, min(int(remaining * 1000), 50)) if remaining > 0 else 0
            if _zmq_poll([(self.sock, _POLLIN)], wait_ms):  # `_poll_in`: at once when one waits
                self._drain(ready=True)
                newest = self._newest
                if newest and not self._eos:  # for speed, the common case of `_take`
                    return newest.pop(next(iter(newest)))
                parsed = self._take()
                if parsed is not None:
                    return parsed
            elif remaining <= 0:
                return None
            now = time.monotonic()

    def _recv_in_order(self, timeout_ms: int) -> Message | None:
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            self._check_monitor()
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not _poll_in(self.sock, remaining):
                return None
            parts = _recv_all(self.sock)
            parsed = self._accept(parts, self._drops, self._counts)
            msg = None if parsed is None else self._bind(parsed)
            if msg is not None:
                return msg
            if remaining == 0:
                return None

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._monitor = None
        self.sock.close()
        if self.shm is not None:
            self.shm.close()
