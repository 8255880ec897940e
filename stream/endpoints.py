"""Endpoint syntax checks at config load: a malformed endpoint or an ipc path longer than the
OS allows fails `validate` and `run` with one line, never a stage's traceback at bind time."""

from __future__ import annotations

import sys

from .spec import ConfigError

# sockaddr_un.sun_path holds 108 bytes on Linux (104 on macOS and the BSDs), one of them the
# terminating NUL; ZeroMQ refuses a longer path with "File name too long".
IPC_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


def check_endpoint(endpoint: str, where: str) -> None:
    """Raise `ConfigError` naming `where` if `endpoint` (expanded) cannot be bound or connected."""
    if endpoint.startswith("tcp://"):
        _check_tcp(endpoint[len("tcp://") :], endpoint, where)
    elif endpoint.startswith("ipc://"):
        _check_ipc(endpoint[len("ipc://") :], endpoint, where)
    elif endpoint.startswith("inproc://"):
        if not endpoint[len("inproc://") :]:
            raise ConfigError(f"{where}: expected inproc://NAME, got {endpoint!r}")
    else:
        raise ConfigError(f"{where}: expected tcp://HOST:PORT or ipc://PATH, got {endpoint!r:.80}")


def _check_tcp(rest: str, endpoint: str, where: str) -> None:
    expected = "tcp://HOST:PORT with PORT 1-65535 (e.g. tcp://127.0.0.1:5555)"
    host, sep, port = rest.rpartition(":")
    if not sep or not host or host == "[]" or any(c.isspace() for c in rest):
        raise ConfigError(f"{where}: expected {expected}, got {endpoint!r:.80}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(
            f"{where}: port {port!r:.20} is not a number in 1-65535; expected {expected}, "
            f"got {endpoint!r:.80}"
        )


def _check_ipc(path: str, endpoint: str, where: str) -> None:
    if not path:
        raise ConfigError(f"{where}: expected ipc://PATH, got {endpoint!r}")
    size = len(path.encode())
    if size > IPC_PATH_MAX:
        raise ConfigError(
            f"{where}: ipc path is {size} bytes, the OS allows at most {IPC_PATH_MAX} "
            f"({path[:40]}...); use a shorter run_dir or endpoint"
        )
