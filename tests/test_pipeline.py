"""Whole pipelines as real processes: `medstream run` of the demo graph, shutdown, restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import yaml

from .helpers import child_port, wait_until

pytestmark = pytest.mark.slow  # `medstream run` of the demo graph

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "ultrasound_seg.yaml"


def demo_config(tmp_path: Path, mode: str = "synchronized", fps: float = 30) -> tuple[Path, Path]:
    """The demo config with its run dir, viewer and video file moved into `tmp_path`. The
    viewer's port: `viewer_port(config)` after `start_run` (which may have to change it)."""
    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = str(tmp_path / "run")
    port = child_port()
    video = tmp_path / "out.mp4"
    grab, _infer, render = data["stages"]
    grab["fps"] = fps
    render["mode"] = mode
    if mode == "passthrough":
        render["video"] = "frames"
    render["sinks"] = [{"type": "viewer", "port": port}, {"type": "video", "path": str(video)}]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, video


def _viewer_sinks(data: dict) -> list[dict]:
    return [s for st in data["stages"] for s in st.get("sinks") or [] if s.get("type") == "viewer"]


def viewer_port(config: Path) -> int:
    """The port of the (first) viewer sink in `config`."""
    return int(_viewer_sinks(yaml.safe_load(config.read_text()))[0]["port"])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _up_or_exited(sup: subprocess.Popen, ports: list[int]) -> bool:
    """Whether `sup` exited, or a process of its tree listens on every one of `ports`."""
    try:
        tree = psutil.Process(sup.pid)
        pids = {sup.pid} | {c.pid for c in tree.children(recursive=True)}
    except psutil.NoSuchProcess:
        return True
    if sup.poll() is not None:
        return True
    ours = {
        c.laddr.port
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }
    return all(p in ours for p in ports)


def _fresh_ports(config: Path, data: dict) -> None:
    for sink in _viewer_sinks(data):
        sink["port"] = child_port()
    config.write_text(yaml.safe_dump(data))


def start_run(config: Path, report: Path, duration: float | None, tries: int = 3) -> subprocess.Popen:
    """`medstream run CONFIG` as a child process. With viewer sinks in CONFIG, returns once they
    listen; a viewer port another process holds is replaced by a fresh one (written into
    CONFIG: `viewer_port(config)` reads it), and a run that exits because its port was taken
    meanwhile is started again."""
    cmd = [sys.executable, "-m", "stream.cli", "run", str(config), "--report", str(report)]
    if duration:
        cmd += ["--duration", str(duration)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(tries):
        data = yaml.safe_load(config.read_text())
        ports = [int(s["port"]) for s in _viewer_sinks(data)]
        if any(_listening(p) for p in ports):
            _fresh_ports(config, data)
            continue
        sup = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if not ports:
            return sup
        wait_until(partial(_up_or_exited, sup, ports), 60, 0.1)
        if sup.poll() is None or sup.returncode == 0 or not any(_listening(p) for p in ports):
            return sup  # up (or failed for a reason of its own: the test sees its output)
        sup.communicate()  # it exited while another process listens on its port
        _fresh_ports(config, data)
    pytest.fail(f"the viewer ports in {config} were taken {tries} times")


def stage_pids(sup: subprocess.Popen) -> dict[str, int]:
    out = {}
    for child in psutil.Process(sup.pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "stage" in cmd:
            out[cmd[-1]] = child.pid
    return out


def wait_for_stages(sup: subprocess.Popen, n: int, timeout: float = 30) -> dict[str, int]:
    pids: dict[str, int] = {}

    def started() -> bool:
        pids.clear()
        pids.update(stage_pids(sup))
        return len(pids) == n

    if not wait_until(started, timeout, 0.1):
        pytest.fail(f"stages did not start: {stage_pids(sup)}")
    return pids


def http_get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def fetch_jpeg(port: int, timeout: float = 30) -> np.ndarray:
    """Poll the viewer until it serves a frame; decode it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            data = http_get(f"http://127.0.0.1:{port}/frame.jpg")
        except OSError:
            time.sleep(0.2)
            continue
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None, "viewer served something that is not a JPEG"
        return img
    pytest.fail("viewer never served a frame")


def finish(sup: subprocess.Popen, timeout: float = 60) -> str:
    try:
        out, _ = sup.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        sup.kill()
        out, _ = sup.communicate()
        pytest.fail(f"medstream run did not stop:\n{out}")
    return out


def assert_accounted(report: dict) -> None:
    f = report["frames"]
    assert f["accounted"], f
    assert f["captured"] == f["delivered"] * 1 + f["dropped_total"]


def test_demo_run_end_to_end(tmp_path: Path) -> None:
    config, video = demo_config(tmp_path)
    report_path = tmp_path / "report.json"
    sup = start_run(config, report_path, duration=8)
    port = viewer_port(config)
    try:
        img = fetch_jpeg(port)
        assert img.shape == (512, 512, 3)
        stats = json.loads(http_get(f"http://127.0.0.1:{port}/stats.json"))
        assert stats.get("delivered", 0) >= 0
    finally:
        out = finish(sup)
    assert sup.returncode == 0, out
    report = json.loads(report_path.read_text())
    assert "glass-to-glass" in out  # the printed table
    f = report["frames"]
    assert f["captured"] >= 60, f
    assert f["delivered"] >= 0.8 * f["captured"], f
    assert_accounted(report)
    assert f["dropped"].get("lost", 0) == 0, f
    g2g = report["latency_ms"]["glass_to_glass"]
    assert g2g["count"] == f["delivered"]
    for key in ("p50", "p90", "p99", "max", "fps"):
        assert g2g[key] is not None and g2g[key] > 0, g2g
    assert g2g["p50"] <= g2g["p90"] <= g2g["p99"] <= g2g["max"]
    for sid in ("grab", "infer", "render"):
        s = report["latency_ms"]["stages"][sid]
        assert s["p50"] is not None and s["fps"] > 0, (sid, s)
    assert report["engines"]["infer"]["backend"] == "onnxruntime"
    acc = report["accuracy"]["render"]
    assert acc["mean_dice"] > 0.6, acc  # delivered masks overlap the phantom's ground truth
    # the annotated video was written and reads back frame by frame
    cap = cv2.VideoCapture(str(video))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (512, 512, 3)
        n += 1
    cap.release()
    sink_drops = report["stages"]["render"]["info"].get("sink_drops", {})
    assert n == f["delivered"] - sum(sum(d.values()) for d in sink_drops.values())


def test_passthrough_run_draws_fresh_overlays(tmp_path: Path) -> None:
    config, _video = demo_config(tmp_path, mode="passthrough")
    report_path = tmp_path / "report.json"
    sup = start_run(config, report_path, duration=6)
    out = finish(sup)
    assert sup.returncode == 0, out
    report = json.loads(report_path.read_text())
    assert_accounted(report)
    assert report["stages"]["render"]["on_video_path"] and not report["stages"]["infer"]["on_video_path"]
    assert report["frames"]["delivered"] >= 0.8 * report["frames"]["captured"]
    assert report["accuracy"]["render"]["mean_dice"] > 0.5


def test_sigint_stops_cleanly_without_orphans(tmp_path: Path) -> None:
    config, _video = demo_config(tmp_path)
    sup = start_run(config, tmp_path / "report.json", duration=None)
    port = viewer_port(config)
    pids = wait_for_stages(sup, 3)
    fetch_jpeg(port)  # frames flow: a run stopped before its first frame exits 3, not 0
    time.sleep(1)  # the scenario: stopped while running steadily, not while starting
    sup.send_signal(signal.SIGINT)
    out = finish(sup, timeout=30)
    assert sup.returncode == 0, out
    for sid, pid in pids.items():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, sid
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["exit"] == "signal SIGINT"
    assert_accounted(report)


def test_killed_stage_is_restarted_and_frames_accounted(tmp_path: Path) -> None:
    config, _video = demo_config(tmp_path)
    report_path = tmp_path / "report.json"
    sup = start_run(config, report_path, duration=10)
    port = viewer_port(config)
    try:
        pids = wait_for_stages(sup, 3)
        fetch_jpeg(port)
        os.kill(pids["infer"], signal.SIGKILL)
        old = pids["infer"]
        if not wait_until(lambda: stage_pids(sup).get("infer") not in (None, old), 15, 0.1):
            pytest.fail("infer was not restarted")
    finally:
        out = finish(sup)
    assert sup.returncode == 0, out
    report = json.loads(report_path.read_text())
    assert report["stages"]["infer"]["restarts"] == 1
    assert_accounted(report)
    # frames flowed again after the restart
    assert report["stages"]["infer"]["incarnations_reported"] == 2
    assert report["frames"]["delivered"] >= 0.5 * report["frames"]["captured"]


def test_stage_that_cannot_start_fails_the_run(tmp_path: Path) -> None:
    """A model file that exists but is no ONNX model passes the preflight (which catches a
    missing one) and fails the infer stage's setup: exit 78, not restarted, the run fails."""
    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = str(tmp_path / "run")
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not an onnx model")
    (tmp_path / "card.json").write_text((ROOT / "engines/models/us-seg/card.json").read_text())
    data["stages"][1]["engine"]["model"] = str(model)
    data["stages"][1]["engine"]["backend"] = "onnxruntime"
    data["stages"][2]["sinks"] = []
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(data))
    sup = start_run(config, tmp_path / "report.json", duration=30)
    out = finish(sup, timeout=60)
    assert sup.returncode == 78, out
    assert "broken.onnx" in out
    assert "infer could not start (exit 78" in out and "not restarting" in out


def test_one_stage_alone_with_a_busy_endpoint_fails_in_one_line(tmp_path: Path) -> None:
    """`medstream stage` binds its links itself; a busy endpoint is one clear line, exit 78."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = yaml.safe_load(DEMO.read_text())
        data["run_dir"] = str(tmp_path / "fresh" / "run")  # does not exist yet
        data["links"]["frames"]["endpoint"] = f"tcp://127.0.0.1:{port}"
        config = tmp_path / "p.yaml"
        config.write_text(yaml.safe_dump(data))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "stream.cli", "stage", str(config), "grab", "--stats-endpoint", ""]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert f"cannot bind tcp://127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
