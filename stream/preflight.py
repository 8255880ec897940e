"""What `medstream run` would fail on at start, checked before any stage starts.

`medstream validate` and `medstream run` call the same `preflight()`: model names and paths
(chains too), CURVE key files, source files, and the report path. `busy_endpoints()` adds what
depends on the moment: tcp endpoints this host would bind that are taken, ipc sockets another
process listens on. Each problem is one line that starts with the dotted key it is about.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import zmq

from .config import GrabSpec, InferSpec, PipelineConfig, StageSpec
from .keys import KeyFileError, key_paths, load_keypair, load_public
from .security import SUPERVISOR, link_keys, link_roles, public_key_file
from .spec import ConfigError
from .stats import STATS_LINK


def preflight(
    cfg: PipelineConfig, stage_ids: list[str], supervisor: bool = True, stats: bool = True
) -> list[str]:
    """Problems that would stop the stages `stage_ids` (and the supervisor) from starting.

    `stats=False`: the stages push no stats (`medstream stage --stats-endpoint ''`)."""
    problems: list[str] = []
    for i, spec in enumerate(cfg.stages):
        if spec.id not in stage_ids:
            continue
        where = f"stages[{i}]"
        if isinstance(spec, InferSpec):
            problems += _model_problems(spec, where)
        if isinstance(spec, GrabSpec):
            problems += _source_problems(spec, where)
    if cfg.security.curve:
        processes = stage_ids + ([SUPERVISOR] if supervisor else [])
        problems += _key_problems(cfg, processes, stats or supervisor)
    return problems


def _model_problems(spec: InferSpec, where: str) -> list[str]:
    from engines import ModelError, check_model

    out = []
    engines = [("engine", spec.engine)] + ([("fallback", spec.fallback)] if spec.fallback else [])
    for key, engine in engines:
        try:
            check_model(engine.model, engine.backend)
        except ModelError as e:
            out.append(f"{where}.{key}.model: {e}")
    return out


def _source_problems(spec: GrabSpec, where: str) -> list[str]:
    try:
        typed = spec.typed_source(where)  # parsed at load; a spec built in code: here, once
    except ConfigError as e:
        return [str(e)]
    kind, source = typed.type, typed.spec
    if kind in ("dicom", "replay", "folder"):
        return _path_problem(source.path, f"{where}.source.path", want_dir=kind == "folder")
    if kind == "capture":
        from .sources.capture import classify

        target = classify(source.input)
        if target.kind == "file":
            return _path_problem(str(target.arg), f"{where}.source.input", want_dir=False)
    return []


def _path_problem(path: str, where: str, want_dir: bool) -> list[str]:
    p = Path(path).expanduser()
    what = "a folder" if want_dir else "a file"
    if not path:
        return [f"{where}: required ({what})"]
    if not p.exists():
        return [f"{where}: {path} does not exist (expected {what})"]
    if want_dir != p.is_dir():
        return [f"{where}: {path} is not {what}"]
    if not os.access(p, os.R_OK | (os.X_OK if want_dir else 0)):
        return [f"{where}: {path} cannot be read (permissions)"]
    return []


def _key_problems(cfg: PipelineConfig, processes: list[str], stats: bool) -> list[str]:
    """Every key file the processes here load: their own secret keys, their peers' public keys."""
    sec = cfg.security
    keys_dir = Path(sec.keys_dir)
    # path -> (whose key, is it a secret key, key name for `medstream keys generate` or "")
    needed: dict[Path, tuple[str, bool, str]] = {}

    for me in processes:
        name = sec.key_name(me)
        needed.setdefault(key_paths(keys_dir, name)[1], (f"{me}'s secret key", True, name))
        if me == SUPERVISOR:
            links = [STATS_LINK]
        else:
            links = ([STATS_LINK] if stats else []) + _links_of(cfg.stage(me))
        for link in links:
            server, entries = link_keys(cfg, link)
            for entry in [sec.key_name(server), *entries]:
                path, key_name = public_key_file(keys_dir, entry)
                needed.setdefault(path, (f"public key {entry!r}", False, key_name))
    problems = []
    for path, (whose, secret, name) in needed.items():
        if not path.exists():
            hint = f"; make it with: medstream keys generate {name} --dir {keys_dir}" if name else ""
            problems.append(f"security.keys_dir: {whose}: {path} does not exist{hint}")
            continue
        try:
            load_keypair(path) if secret else load_public(path)
        except KeyFileError as e:
            problems.append(f"security.keys_dir: {whose}: {e}")
    return problems


def _links_of(spec: StageSpec) -> list[str]:
    names = [getattr(spec, key, "") for key in ("input", "output", "video")]
    return [n for n in names if n]


def report_path_problem(path: Path) -> str | None:
    """Why the JSON report could not be written to `path`, or None. Creates nothing: the
    folders that are missing are checked where they would be made."""
    if path.is_dir():
        return f"--report: {path} is a folder; expected a file path"
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"--report: cannot create the folder {path.parent}: {existing} is not a folder"
    probe = existing / f".{path.name}.{os.getpid()}.probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"--report: cannot write in {existing}: {e.strerror}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"--report: {path} exists and cannot be written"
    return None


def bound_endpoints(
    cfg: PipelineConfig, stage_ids: list[str], supervisor: bool = True
) -> list[tuple[str, str]]:
    """(dotted key, endpoint) of what the stages here (and the supervisor) bind."""
    out = [("stats_endpoint", cfg.stats_endpoint)] if supervisor and cfg.stats_endpoint else []
    for name, link in cfg.links.items():
        binders, _ = link_roles(cfg, name)
        if any(b in stage_ids for b in binders):
            out.append((f"links.{name}.endpoint", link.endpoint))
    return out


def busy_endpoints(cfg: PipelineConfig, stage_ids: list[str], supervisor: bool = True) -> list[str]:
    """One line per endpoint this host would bind that is in use now."""
    found = [(w, e, endpoint_in_use(e)) for w, e in bound_endpoints(cfg, stage_ids, supervisor)]
    return [f"{where}: {endpoint} is in use ({why})" for where, endpoint, why in found if why]


def endpoint_in_use(endpoint: str) -> str | None:
    """Why `endpoint` cannot be bound now, or None. A tcp endpoint is bound and released at
    once; an ipc socket file is never bound here (binding would take it from its owner), only
    connected to: a process that accepts the connection is listening on it."""
    if endpoint.startswith("tcp://"):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            # only "in use" here: an address of another host (a graph across hosts, validated
            # on one of them) is not this host's to bind, and a stage that tries says so itself
            return zmq.strerror(e.errno) if e.errno == errno.EADDRINUSE else None
        finally:
            sock.close(linger=0)
            ctx.term()
        return None
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if path.startswith("@"):
            address = "\0" + path[1:]
        elif os.path.exists(path):
            address = path
        else:
            return None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(address)
            except OSError:
                return None
        return "another process listens on it"
    return None
