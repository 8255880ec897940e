"""CURVE on real sockets: allowed keys get frames, others get nothing and are counted; key files;
the rule that endpoints off this host need CURVE or an explicit `insecure: true`."""

from __future__ import annotations

import copy
import logging
import os
import stat
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
import zmq

from stream.clock import WallClock
from stream.config import PipelineConfig, load_config
from stream.keys import KeyFileError, generate_keypair, load_keypair, load_public
from stream.security import Security, startup_notice
from stream.spec import ConfigError
from stream.stats import StageStats
from stream.transport import Receiver, Sender

from .helpers import ipc_endpoint, make_frame, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEMO = yaml.safe_load((ROOT / "configs" / "ultrasound_seg.yaml").read_text())
LOG = logging.getLogger("test-security")


def curve_config(keys: Path, pattern: str = "pubsub", curve: bool = True, **link) -> PipelineConfig:
    data = copy.deepcopy(DEMO)
    data["links"]["frames"] = {
        "endpoint": ipc_endpoint(keys.parent, "frames"),  # inline: CURVE keeps shm off
        "pattern": pattern,
        "mode": "live",
        **link,
    }
    data["security"] = {"curve": curve, "keys_dir": str(keys)}
    return load_config(data)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    for name in ("grab", "infer", "render", "supervisor", "rogue"):
        generate_keypair(d, name)
    return d


class End:
    """One side of the `frames` link in its own context (one ZAP handler per context)."""

    def __init__(self, cfg: PipelineConfig, me: str):
        self.ctx = zmq.Context()
        self.security = Security(cfg, me, self.ctx, LOG)
        self.stats = StageStats(me, "test", WallClock())
        self.sock: Sender | Receiver | None = None

    def counts(self) -> Counter[str]:
        return self.security.take_counts()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.security.close()
        self.ctx.term()


def sender(cfg: PipelineConfig) -> End:
    end = End(cfg, "grab")
    end.sock = Sender(
        end.ctx, "frames", cfg.link("frames"), "grab", WallClock(), end.stats, guard=end.security
    )
    return end


def receiver(cfg: PipelineConfig, me: str = "infer") -> End:
    end = End(cfg, me)
    end.sock = Receiver(
        end.ctx, "frames", cfg.link("frames"), me, WallClock(), end.stats, guard=end.security
    )
    return end


def rogue_socket(ctx: zmq.Context, kind: int, endpoint: str, server_public: bytes | None,
                 keys: Path | None) -> zmq.Socket:
    """A raw socket that is not in the allow-list: a foreign key, or no CURVE at all."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None and server_public is not None:
        pair = load_keypair(keys / "rogue.key_secret")
        sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def test_key_files(tmp_path: Path) -> None:
    public, secret = generate_keypair(tmp_path / "k", "grab")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    pair = load_keypair(secret)
    assert pair.public == load_public(public) and len(pair.secret) == 40
    with pytest.raises(KeyFileError, match="--force"):
        generate_keypair(tmp_path / "k", "grab")
    generate_keypair(tmp_path / "k", "grab", force=True)
    os.chmod(secret, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keypair(secret)
    with pytest.raises(KeyFileError, match="holds no secret key"):
        os.chmod(public, 0o600)
        load_keypair(public)
    with pytest.raises(KeyFileError, match="no such key file"):
        load_public(tmp_path / "k" / "nobody.key")
    bad = tmp_path / "k" / "bad.key"
    bad.write_text("curve\n    public-key = \"" + "\x01" * 40 + "\"\n")
    with pytest.raises(KeyFileError):
        load_public(bad)
    with pytest.raises(KeyFileError, match="key name"):
        generate_keypair(tmp_path / "k", "../evil")


def test_allowed_key_receives_frames_and_rogues_get_nothing(
    keys: Path, zmq_ctx: zmq.Context
) -> None:
    cfg = curve_config(keys)
    tx = sender(cfg)
    rx = receiver(cfg, "infer")
    rogue_ctx = zmq_ctx  # the rogue's own context: no ZAP handler, torn down by the fixture
    server_public = load_public(keys / "grab.key")
    endpoint = cfg.link("frames").endpoint
    rogue = rogue_socket(rogue_ctx, zmq.SUB, endpoint, server_public, keys)
    plain = rogue_socket(rogue_ctx, zmq.SUB, endpoint, None, None)
    try:
        assert isinstance(tx.sock, Sender) and isinstance(rx.sock, Receiver)
        assert tx.sock.wait_for_consumers(1, 5.0)
        got = []
        for seq in range(40):
            tx.sock.send(make_frame(seq, (32, 32), time.time_ns()))
            msg = rx.sock.recv(100)
            if msg is not None:
                got.append(msg.frame.seq)
        assert len(got) >= 30, got
        def subscribers() -> int:
            tx.sock._track_subscriptions()
            return tx.sock.consumers

        assert not wait_until(lambda: subscribers() != 1, 0.3)  # neither rogue ever subscribed
        for s in (rogue, plain):
            assert not s.poll(200), "a peer without an allowed key received a frame"
        counts: Counter[str] = Counter()
        assert wait_until(lambda: counts.update(tx.counts()) or counts["auth_refused:medstream/frames"] > 0)
        assert counts["auth_accepted:medstream/frames"] >= 1
        # the plain peer never gets as far as ZAP: the server's handshake monitor counts it
        assert wait_until(
            lambda: counts.update(tx.counts()) or counts["handshake_failed:medstream/frames"]
            > counts["auth_refused:medstream/frames"]
        ), counts
    finally:
        rogue.close()
        plain.close()
        rx.close()
        tx.close()


def test_client_refused_by_the_server_counts_it(keys: Path) -> None:
    """A stage whose key the server does not allow sees (and counts) the refusal itself."""
    cfg = curve_config(keys, allow=["render"])  # infer is no longer allowed
    tx = sender(cfg)
    rx = receiver(cfg, "infer")
    try:
        counts: Counter[str] = Counter()
        assert wait_until(lambda: counts.update(rx.counts()) or counts["handshake_failed:medstream/frames"] > 0)
        assert isinstance(tx.sock, Sender)
        assert not tx.sock.wait_for_consumers(1, 0.5)
    finally:
        rx.close()
        tx.close()


def test_pushpull_server_accepts_nothing_from_a_rogue_pusher(
    keys: Path, zmq_ctx: zmq.Context
) -> None:
    """bind: consumer: the receiving stage is the CURVE server; a foreign pusher's frames are
    never accepted."""
    cfg = curve_config(keys, pattern="pushpull", bind="consumer")
    rx = receiver(cfg, "infer")
    tx = sender(cfg)
    rogue_ctx = zmq_ctx  # the rogue's own context: no ZAP handler, torn down by the fixture
    rogue = rogue_socket(
        rogue_ctx, zmq.PUSH, cfg.link("frames").endpoint, load_public(keys / "infer.key"), keys
    )
    try:
        assert isinstance(tx.sock, Sender) and isinstance(rx.sock, Receiver)
        from stream.codec import encode_frame

        for seq in range(5):  # queued on the rogue side, never delivered
            rogue.send_multipart(encode_frame(make_frame(1000 + seq, (8, 8), 1), "rogue", 1, 1), zmq.NOBLOCK)
        seen = []
        end = time.monotonic() + 3
        while time.monotonic() < end and len(seen) < 10:
            tx.sock.send(make_frame(len(seen), (8, 8), time.time_ns()))
            msg = rx.sock.recv(50)
            if msg is not None:
                seen.append(msg.frame.seq)
        assert seen and all(s < 1000 for s in seen), seen
        counts: Counter[str] = Counter()
        assert wait_until(lambda: counts.update(rx.counts()) or counts["auth_refused:medstream/frames"] > 0)
    except zmq.Again:
        pytest.fail("rogue socket could not queue")
    finally:
        rogue.close()
        tx.close()
        rx.close()


def test_missing_key_is_a_clear_error(keys: Path) -> None:
    cfg = curve_config(keys)
    (keys / "infer.key_secret").unlink()
    with pytest.raises(KeyFileError, match="infer.key_secret"):
        End(cfg, "infer")


def test_endpoints_off_this_host_need_curve_or_insecure(caplog: pytest.LogCaptureFixture) -> None:
    data = copy.deepcopy(DEMO)
    data["links"]["frames"]["endpoint"] = "tcp://0.0.0.0:5555"
    with pytest.raises(ConfigError, match=r"links.frames.endpoint: tcp://0.0.0.0:5555 .*security.curve"):
        load_config(data)
    data["security"] = {"insecure": True}
    cfg = load_config(data)
    with caplog.at_level(logging.WARNING, logger="test-security"):
        startup_notice(cfg, LOG)
    assert "INSECURE" in caplog.text and "tcp://0.0.0.0:5555" in caplog.text
    # loopback tcp and ipc stay on the host: no keys needed
    data = copy.deepcopy(DEMO)
    data["links"]["frames"]["endpoint"] = "tcp://127.0.0.1:5555"
    load_config(data)
    data["stats_endpoint"] = "tcp://*:5556"
    with pytest.raises(ConfigError, match="stats_endpoint"):
        load_config(data)


@pytest.mark.parametrize("channel", ["stats_pub", "frame_log"])
def test_tool_channels_off_this_host_need_insecure_even_with_curve(keys: Path, channel: str) -> None:
    """The tool channels are not encrypted: CURVE on the links does not cover them."""
    for security in ({}, {"curve": True, "keys_dir": str(keys)}):
        data = copy.deepcopy(DEMO)
        data["security"] = dict(security)
        data[channel] = "tcp://0.0.0.0:5557"
        with pytest.raises(ConfigError, match=f"{channel}: tcp://0.0.0.0:5557"):
            load_config(data)
        data["security"]["insecure"] = True
        assert getattr(load_config(data), channel) == "tcp://0.0.0.0:5557"


def test_curve_needs_one_binding_stage_per_link(keys: Path) -> None:
    data = copy.deepcopy(DEMO)
    data["security"] = {"curve": True, "keys_dir": str(keys)}
    data["links"]["results"]["bind"] = "consumer"  # two render stages would both bind it
    data["stages"].append({"id": "render2", "kind": "render", "input": "results", "sinks": []})
    with pytest.raises(ConfigError, match="links.results: with security.curve"):
        load_config(data)
    data = copy.deepcopy(DEMO)
    data["security"] = {"curve": True, "stage_keys": {"nobody": "x"}}
    with pytest.raises(ConfigError, match="stage_keys.nobody"):
        load_config(data)


@pytest.mark.slow
def test_stage_without_a_peer_key_exits_78_at_once(keys: Path, tmp_path: Path) -> None:
    """A missing public key (here the supervisor's, for the stats channel) is a clear, fatal
    error: exit code 78 (its setup failed), which the supervisor does not restart."""
    import subprocess
    import sys

    (keys / "supervisor.key").unlink()
    data = copy.deepcopy(DEMO)
    data["run_dir"] = str(tmp_path / "run")
    data["security"] = {"curve": True, "keys_dir": str(keys)}
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(data))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MEDSTREAM_SUPERVISOR_PID", None)
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "stage", str(config), "grab"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 78, done.stderr
    assert "supervisor.key does not exist; make it with: medstream keys generate supervisor" in done.stderr
