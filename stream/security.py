"""CURVE on the links and the stats channel: who has which key, who may connect to whom.

With `security.curve: true` every ZeroMQ socket of a pipeline is encrypted and authenticated:
the side that binds a link is the CURVE server (its key is the stage's key); the side that
connects is a client that must know the server's public key and whose own public key must be in
the link's allow-list (`links.<name>.allow`; by default the keys of the stages that connect to
it in the config). The stats channel works the same way with the supervisor's key as server and
every stage as an allowed client.

Keys live in `security.keys_dir` as `NAME.key` / `NAME.key_secret` (`medstream keys generate
NAME`); a stage's key name is its id unless `security.stage_keys` names another. A host needs
the secret keys of the stages it runs and the public keys of their peers only.

Without CURVE, a config whose endpoints leave the host is refused unless `security.insecure:
true`, and then every start says so.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from .exposure import endpoint_leaves_host
from .keys import KeyFileError, KeyPair, key_paths, load_keypair, load_public
from .spec import ConfigError, bounded, section
from .stats import STATS_LINK
from .zap import AuthWatch

if TYPE_CHECKING:
    from .config import PipelineConfig

SUPERVISOR = "supervisor"


@dataclass
class SecuritySpec:
    """The `security:` section."""

    curve: bool = bounded(False, doc="encrypt and authenticate every link and the stats channel")
    keys_dir: str = bounded("keys", doc="folder of NAME.key (public) and NAME.key_secret files")
    stage_keys: dict[str, Any] = section(
        dict, "stage id (or 'supervisor') -> key name in keys_dir; default: the id itself"
    )
    insecure: bool = bounded(
        False, doc="allow endpoints that leave this host without CURVE (said at every start)"
    )

    def validate(self, where: str) -> None:
        for sid, name in self.stage_keys.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{where}.stage_keys.{sid}: expected a key name, got {name!r:.40}")

    def key_name(self, stage_id: str) -> str:
        return str(self.stage_keys.get(stage_id, stage_id))


def exposed_endpoints(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(where, endpoint) of every endpoint whose traffic can leave this host."""
    out = [(f"links.{n}.endpoint", s.endpoint) for n, s in cfg.links.items()]
    out.append(("stats_endpoint", cfg.stats_endpoint))
    out += tool_channels(cfg)
    return [(w, e) for w, e in out if endpoint_leaves_host(e)]


def tool_channels(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(where, endpoint) of the channels tools tap (stats re-publication, frame log): they carry
    timings and counters, never images, and are not CURVE-secured."""
    return [("stats_pub", cfg.stats_pub), ("frame_log", cfg.frame_log)]


def link_roles(cfg: PipelineConfig, link: str) -> tuple[list[str], list[str]]:
    """(binding stage ids, connecting stage ids) of `link` in the config."""
    producers = [s.id for s in cfg.stages if getattr(s, "output", "") == link]
    consumers = [
        s.id for s in cfg.stages if link in (getattr(s, "input", ""), getattr(s, "video", ""))
    ]
    if cfg.links[link].bind == "producer":
        return producers, consumers
    return consumers, producers


def link_keys(cfg: PipelineConfig, link: str) -> tuple[str, list[str]]:
    """(the process whose key is `link`'s server key, the public key entries allowed to connect:
    `links.<name>.allow`, else the key names of the stages that connect; the stats channel's
    server is the supervisor, every stage a client)."""
    sec = cfg.security
    if link == STATS_LINK:
        return SUPERVISOR, [sec.key_name(s.id) for s in cfg.stages]
    binders, clients = link_roles(cfg, link)
    return binders[0], list(cfg.links[link].allow) or [sec.key_name(c) for c in clients]


def public_key_file(keys_dir: Path, entry: str) -> tuple[Path, str]:
    """(file, key name) of a public key named in the config: a path to a file (key name ""),
    else a key name in keys_dir."""
    if "/" in entry or entry.endswith(".key"):
        return Path(entry), ""
    return key_paths(keys_dir, entry)[0], entry


def check_security(cfg: PipelineConfig) -> None:
    """The load-time rules: endpoints off this host need CURVE or `insecure: true`; with CURVE
    every link has exactly one binding stage (its server key)."""
    sec = cfg.security
    if not sec.curve:
        exposed = exposed_endpoints(cfg)
        if exposed and not sec.insecure:
            where, endpoint = exposed[0]
            raise ConfigError(
                f"{where}: {endpoint} can be reached from other hosts, and patient images would "
                "travel unencrypted; set security.curve: true (keys: medstream keys generate "
                "NAME), or security.insecure: true on a network you trust"
            )
        return
    for where, endpoint in tool_channels(cfg):
        if endpoint_leaves_host(endpoint) and not sec.insecure:
            raise ConfigError(
                f"{where}: {endpoint} can be reached from other hosts, and this tool channel is "
                "not encrypted; keep it on ipc:// or 127.0.0.1, or set security.insecure: true"
            )
    for name in cfg.links:
        binders, _ = link_roles(cfg, name)
        if len(binders) != 1:
            raise ConfigError(
                f"links.{name}: with security.curve every link needs exactly one stage that binds "
                f"it (its key is the link's server key); found {len(binders)}"
            )
    ids = {s.id for s in cfg.stages} | {SUPERVISOR}
    for sid in sec.stage_keys:
        if sid not in ids:
            raise ConfigError(f"security.stage_keys.{sid}: no stage with that id")


def startup_notice(cfg: PipelineConfig, log: logging.Logger) -> None:
    """Say how the links are protected; shout when they are not."""
    if cfg.security.curve:
        log.info("CURVE on: every link and the stats channel encrypted and authenticated")
        return
    exposed = exposed_endpoints(cfg)
    if exposed:
        log.warning(
            "INSECURE (security.insecure: true): %s carry patient images unencrypted and "
            "unauthenticated",
            ", ".join(e for _, e in exposed),
        )


@dataclass(frozen=True)
class _LinkKeys:
    server_public: bytes
    allow: frozenset[bytes]


class Security:
    """The keys of one process (a stage, or the supervisor) and its ZAP handler.

    `secure(sock, link, binds)` makes a socket a CURVE server or client before it binds or
    connects; `take_counts()` hands over refusal and handshake counts for the stats."""

    def __init__(self, cfg: PipelineConfig, me: str, ctx: zmq.Context, log: logging.Logger):
        self.cfg = cfg
        self.me = me
        self.log = log
        sec = cfg.security
        self.keys_dir = Path(sec.keys_dir)
        _, secret_path = key_paths(self.keys_dir, sec.key_name(me))
        self.own: KeyPair = load_keypair(secret_path)
        self._links: dict[str, _LinkKeys] = {}
        self.watch = AuthWatch(ctx, log)

    def _public(self, entry: str) -> bytes:
        """A public key named in the config: a key name in keys_dir, or a path to a file."""
        return load_public(public_key_file(self.keys_dir, entry)[0])

    def _keys(self, link: str) -> _LinkKeys:
        if link not in self._links:
            server, entries = link_keys(self.cfg, link)
            self._links[link] = _LinkKeys(
                server_public=self._public(self.cfg.security.key_name(server)),
                allow=frozenset(self._public(e) for e in entries),
            )
        return self._links[link]

    def secure(self, sock: zmq.Socket, link: str, binds: bool) -> None:
        """Set CURVE options on `sock` for `link` (before it binds or connects)."""
        keys = self._keys(link)
        domain = f"medstream/{link}"
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.own.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.own.secret)
        if binds:
            if self.own.public != keys.server_public:
                raise KeyFileError(
                    f"{self.me} binds {link} but its key is not the link's server key "
                    "(check security.stage_keys)"
                )
            self.watch.allow_keys(domain, keys.allow)
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
        self.watch.watch(sock, domain, "server" if binds else "client")

    def take_counts(self) -> Counter[str]:
        return self.watch.take_counts()

    def close(self) -> None:
        self.watch.close()
