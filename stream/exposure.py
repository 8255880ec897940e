"""Which addresses stay on this host, and the rule for listening anywhere else.

Shared by the ZeroMQ links (a tcp endpoint off loopback needs CURVE or `insecure: true`) and by
the edge servers (the browser viewer needs a token off loopback; OpenIGTLink, which has no
authentication, needs an explicit `allow_remote: true`).
"""

from __future__ import annotations

import hmac
import ipaddress

from .spec import ConfigError

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual loopback names; False for anything else
    (wildcards `*`, `0.0.0.0`, `::`, other addresses and host names)."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_host(endpoint: str) -> str | None:
    """The host of a `tcp://HOST:PORT` endpoint (a `;`-separated source address is ignored);
    None for ipc:// and inproc://, which never leave the host."""
    if not endpoint.startswith("tcp://"):
        return None
    address = endpoint[len("tcp://") :].rsplit(";", 1)[-1]
    host, _, _port = address.rpartition(":")
    return host


def endpoint_leaves_host(endpoint: str) -> bool:
    """True if traffic on `endpoint` can reach another machine."""
    host = endpoint_host(endpoint)
    return host is not None and not is_loopback(host)


def require_loopback_or(host: str, guarded: bool, where: str, how: str) -> None:
    """ConfigError unless `host` is a loopback address or the caller's guard is set.

    `how` says what to set to listen elsewhere (it ends the error message)."""
    if not guarded and not is_loopback(host):
        raise ConfigError(
            f"{where}: {host!r} is not a loopback address and would serve patient images to the "
            f"network; {how}"
        )


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    if given is None or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())
