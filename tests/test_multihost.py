"""Two hosts, simulated with Linux network namespaces joined by a veth pair: the grab stage runs in
one, infer + render (under `medstream run --stages`) in the other, linked over tcp with CURVE on.
A peer in the first namespace without an allowed key gets nothing and is counted.

Needs root and iproute2 (`ip netns`); skipped with a message otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stream.keys import generate_keypair

pytestmark = pytest.mark.slow  # two `medstream` processes per 'host'

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "ultrasound_seg.yaml"
ADDR_A, ADDR_B = "10.213.0.1", "10.213.0.2"
FRAMES = 150

ROGUE = """
import sys, time, zmq, zmq.auth
public, secret = zmq.auth.load_certificate(sys.argv[2])
server, _ = zmq.auth.load_certificate(sys.argv[3])
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
s.curve_publickey, s.curve_secretkey, s.curve_serverkey = public, secret, server
s.setsockopt(zmq.SUBSCRIBE, b"")
s.connect(sys.argv[1])
got, end = 0, time.monotonic() + float(sys.argv[4])
while time.monotonic() < end:
    if s.poll(100):
        s.recv_multipart()
        got += 1
print("rogue received", got)
s.close(linger=0)
ctx.term()
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (run the suite as root)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (`ip`): apt-get install iproute2")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b, veth_a, veth_b = f"msA{tag}", f"msB{tag}", f"vmsa{tag}", f"vmsb{tag}"
    try:
        ip("netns", "add", ns_a)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create a network namespace here: {e.stderr.strip()}")
    try:
        ip("netns", "add", ns_b)
        ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        ip("link", "set", veth_a, "netns", ns_a)
        ip("link", "set", veth_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, veth_a, ADDR_A), (ns_b, veth_b, ADDR_B)):
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield ns_a, ns_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def in_ns(ns: str, *cmd: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("MEDSTREAM_SUPERVISOR_PID", None)
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, *cmd],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def communicate(p: subprocess.Popen, timeout: float) -> str:
    try:
        return p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()[0] + "\n[killed: timed out]"


def test_grab_and_infer_render_on_two_hosts_over_curve(two_hosts: tuple[str, str], tmp_path: Path) -> None:
    ns_a, ns_b = two_hosts
    keys = tmp_path / "keys"
    for name in ("grab", "infer", "render", "supervisor", "rogue"):
        generate_keypair(keys, name)
    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = str(tmp_path / "run")
    data["stats_endpoint"] = f"tcp://{ADDR_B}:5603"  # the supervisor, on host B
    data["security"] = {"curve": True, "keys_dir": str(keys)}
    data["links"]["frames"]["endpoint"] = f"tcp://{ADDR_A}:5601"  # grab binds on host A
    data["links"]["results"]["endpoint"] = "tcp://127.0.0.1:5602"  # infer -> render, both on B
    grab, _infer, render = data["stages"]
    grab["frames"] = FRAMES
    render["sinks"] = []
    config = tmp_path / "two_hosts.yaml"
    config.write_text(yaml.safe_dump(data))
    report_path = tmp_path / "report.json"

    host_b = in_ns(ns_b, "-m", "stream.cli", "run", str(config), "--stages", "infer,render",
                   "--report", str(report_path), "--duration", "90")
    host_a = in_ns(ns_a, "-m", "stream.cli", "stage", str(config), "grab")
    rogue = in_ns(ns_a, "-c", ROGUE, f"tcp://{ADDR_A}:5601", str(keys / "rogue.key_secret"),
                  str(keys / "grab.key"), "4")
    rogue_out = communicate(rogue, 30)
    out_a = communicate(host_a, 90)
    out_b = communicate(host_b, 90)
    print(out_a, out_b, rogue_out, sep="\n")
    assert host_a.returncode == 0, out_a
    assert host_b.returncode == 0, out_b
    assert "rogue received 0" in rogue_out, rogue_out
    assert "is not in the allow-list" in out_a  # the refusal is logged on host A
    report = json.loads(report_path.read_text())
    f = report["frames"]
    print("frames", f, "\nglass-to-glass ms", report["latency_ms"]["glass_to_glass"])
    assert f["captured"] == FRAMES, f  # the remote grab's stats crossed to host B
    assert f["delivered"] >= 0.8 * FRAMES and f["accounted"], f
    g2g = report["latency_ms"]["glass_to_glass"]
    assert g2g["count"] == f["delivered"] and 0 < g2g["p50"] <= g2g["p99"] < report["budget_ms"] * 4
    assert report["security"]["curve"] and report["security"]["auth_refused"].get("grab/medstream/frames", 0) >= 1
    assert report["clock"]["skew_events"] == {}
    assert report["supervisor"]["stages_here"] == ["render", "infer"]
    assert report["stages"]["grab"]["incarnations_reported"] == 1
