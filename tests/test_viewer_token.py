"""Edge servers off loopback: the viewer needs a token file (and then every route needs the token);
OpenIGTLink needs an explicit allow_remote."""

from __future__ import annotations

import http.client
from pathlib import Path

import numpy as np
import pytest

from stream.exposure import endpoint_host, is_loopback, token_matches
from stream.frame import Frame
from stream.sinks import SinkError, ViewerSink, ViewerSpec
from stream.spec import ConfigError, parse_spec

TOKEN = "s3cret-token-0123456789"


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def conn_post(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def test_loopback_rules() -> None:
    for host in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "*", "::", "10.0.0.2", "192.168.1.5", "scanner.local", ""):
        assert not is_loopback(host), host
    assert endpoint_host("tcp://10.1.2.3:5555") == "10.1.2.3"
    assert endpoint_host("tcp://[::1]:5555") == "[::1]"
    assert endpoint_host("ipc:///tmp/x.ipc") is None
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches(None, TOKEN) and not token_matches("", "")
    assert not token_matches("\udcff", TOKEN)  # not encodable: refused, no exception


def test_viewer_off_loopback_needs_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sinks\[0\].host: '0.0.0.0' is not a loopback .*token_file"):
        parse_spec(ViewerSpec, {"host": "0.0.0.0"}, "sinks[0]")
    spec = parse_spec(ViewerSpec, {"host": "0.0.0.0", "token_file": "t"}, "sinks[0]")
    assert spec.token_file == "t"
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(SinkError, match="shorter than 16"):
        ViewerSink(ViewerSpec(port=0, token_file=str(short)), "v")
    with pytest.raises(SinkError, match="cannot read token_file"):
        ViewerSink(ViewerSpec(port=0, token_file=str(tmp_path / "missing")), "v")


def test_igtl_off_loopback_needs_allow_remote() -> None:
    from stream.sinks.igtl import IgtlSpec

    with pytest.raises(ConfigError, match=r"sinks\[1\].host: '0.0.0.0' .*allow_remote"):
        parse_spec(IgtlSpec, {"host": "0.0.0.0"}, "sinks[1]")
    assert parse_spec(IgtlSpec, {"host": "0.0.0.0", "allow_remote": True}, "s").allow_remote
    assert parse_spec(IgtlSpec, {}, "s").host == "127.0.0.1"


def test_every_route_needs_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    sink = ViewerSink(ViewerSpec(port=0, token_file=str(token_file)), "v")
    try:
        sink.write(np.zeros((8, 8, 3), np.uint8), Frame("s", 1, 0, 0, np.zeros((1, 1), np.uint8)))
        for path in ("/", "/stats.json", "/streams.json", "/frame.jpg", "/stream.mjpg", "/nope"):
            assert get(sink.port, path)[0] == 401, path
            assert get(sink.port, path + "?token=wrong")[0] == 401, path
        assert get(sink.port, f"/frame.jpg?token={TOKEN}")[0] == 200
        assert get(sink.port, "/stats.json", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(sink.port, "/stats.json", {"X-Medstream-Token": TOKEN})[0] == 200
        status, page = get(sink.port, f"/?token={TOKEN}")
        assert status == 200
        assert f'const Q = "?token={TOKEN}";' in page.decode()  # the page carries it on
        assert conn_post(sink.port, "/shown") == 401
        assert conn_post(sink.port, f"/shown?token={TOKEN}") == 400  # in, but not a report
        assert sink.stats()["viewer"]["unauthorized"] == 13
    finally:
        sink.close()
