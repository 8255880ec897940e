"""CURVE key files: `NAME.key` (public) and `NAME.key_secret` (secret, mode 0600).

The files are ZeroMQ certificates as `zmq.auth.create_certificates` writes them, so other ZeroMQ
tools read them too. A secret key file readable by group or others is refused, like ssh does.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, malformed or too widely readable."""


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


def key_paths(directory: str | Path, name: str) -> tuple[Path, Path]:
    """(public, secret) file paths of key `name` in `directory`."""
    d = Path(directory)
    return d / f"{name}{PUBLIC_SUFFIX}", d / f"{name}{SECRET_SUFFIX}"


def generate_keypair(directory: str | Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair for `name`; the secret file gets mode 0600. Refuses to overwrite
    existing files unless `force`. Returns (public, secret) paths."""
    if not zmq.has("curve"):
        raise KeyFileError("this libzmq has no CURVE support: cannot make keys")
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise KeyFileError(f"key name {name!r}: use letters, digits, '-', '_' or '.'")
    d = Path(directory)
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise KeyFileError(f"cannot make the key folder {str(d)!r}: {e.strerror or e}") from e
    public, secret = key_paths(d, name)
    if not force and (public.exists() or secret.exists()):
        raise KeyFileError(f"{public} or {secret} exists; pass --force to replace the key pair")
    old = os.umask(0o077)  # the secret is never readable by others, not even for a moment
    try:
        made_public, made_secret = zmq.auth.create_certificates(str(d), name)
    except OSError as e:
        raise KeyFileError(f"cannot write keys in {str(d)!r}: {e.strerror or e}") from e
    finally:
        os.umask(old)
    os.chmod(made_secret, 0o600)
    os.chmod(made_public, 0o644)
    return Path(made_public), Path(made_secret)


def load_public(path: str | Path) -> bytes:
    """The public key in a `.key` (or `.key_secret`) file."""
    public, _ = _load(Path(path))
    return public


def load_keypair(path: str | Path) -> KeyPair:
    """The key pair in a `.key_secret` file, which must not be readable by group or others."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read secret key: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{p}: secret key is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {p}"
        )
    public, secret = _load(p)
    if secret is None:
        raise KeyFileError(f"{p}: holds no secret key (is it the public .key file?)")
    return KeyPair(public, secret)


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyFileError(f"{path}: no such key file (make one: medstream keys generate NAME)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{path}: not a ZeroMQ certificate: {e}") from None
    if public is None or len(public) != 40:
        raise KeyFileError(f"{path}: no valid public key")
    if secret is not None and len(secret) != 40:
        raise KeyFileError(f"{path}: malformed secret key")
    for key in (public, secret):
        if key is not None and not _is_z85(key):
            raise KeyFileError(f"{path}: a key is not Z85 text")
    return public, secret


def _is_z85(key: bytes) -> bool:
    try:
        z85.decode(key)
    except (ValueError, KeyError, IndexError):
        return False
    return True
