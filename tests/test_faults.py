"""Faults on real processes: each stage SIGKILLed in turn, a stage that keeps crashing, a
producer that restarts, a consumer that goes away and comes back."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
import zmq

from stream.clock import WallClock
from stream.codec import EndOfStream
from stream.stats import StageStats
from stream.transport import LinkSpec, Receiver, Sender

from .helpers import ipc_endpoint, make_frame, wait_until
from .test_pipeline import (
    demo_config,
    finish,
    http_get,
    stage_pids,
    start_run,
    viewer_port,
    wait_for_stages,
)

pytestmark = pytest.mark.slow  # real pipelines and producer/consumer processes, killed on purpose

RESUME_LIMIT_S = 2.0
CTX = mp.get_context("spawn")


def viewer_stats(port: int) -> dict | None:
    try:
        return json.loads(http_get(f"http://127.0.0.1:{port}/stats.json", timeout=1))["viewer"]
    except (OSError, ValueError):
        return None


def wait_for_picture_after(port: int, t_ns: int, timeout: float = 10.0) -> float:
    """Seconds from wall time `t_ns` until the viewer shows a frame captured after it."""
    def resumed() -> bool:
        v = viewer_stats(port)
        return bool(v and v.get("last_capture_ns") and v["last_capture_ns"] > t_ns)

    if not wait_until(resumed, timeout, 0.05):
        pytest.fail(f"the live picture did not resume within {timeout} s")
    return (time.time_ns() - t_ns) / 1e9


def wait_for_new_pid(sup: subprocess.Popen, sid: str, old: int, timeout: float = 10.0) -> int:
    new: list[int] = []

    def restarted() -> bool:
        pid = stage_pids(sup).get(sid)
        new[:] = [pid] if pid is not None and pid != old else []
        return bool(new)

    if not wait_until(restarted, timeout, 0.05):
        pytest.fail(f"{sid} was not restarted")
    return new[0]


def test_each_stage_killed_in_turn_restarts_and_every_frame_is_accounted(tmp_path: Path) -> None:
    config, _video = demo_config(tmp_path)
    report_path = tmp_path / "report.json"
    sup = start_run(config, report_path, duration=None)
    port = viewer_port(config)
    resumed: dict[str, float] = {}
    try:
        pids = wait_for_stages(sup, 3)
        wait_for_picture_after(port, time.time_ns(), timeout=30)
        for victim in ("grab", "infer", "render"):
            time.sleep(1.0)  # steady state before each kill
            others = {sid: pid for sid, pid in pids.items() if sid != victim}
            killed_at = time.time_ns()
            os.kill(pids[victim], signal.SIGKILL)
            pids[victim] = wait_for_new_pid(sup, victim, pids[victim])
            resumed[victim] = wait_for_picture_after(port, killed_at)
            for sid, pid in others.items():  # the others kept running, untouched
                assert psutil.pid_exists(pid) and stage_pids(sup).get(sid) == pid, sid
        time.sleep(1.0)  # the scenario: a second of steady running after the last restart
        sup.send_signal(signal.SIGINT)
    finally:
        out = finish(sup)
    print(f"picture resumed after SIGKILL (s): {resumed}")
    assert sup.returncode == 0, out
    for victim, seconds in resumed.items():
        assert seconds <= RESUME_LIMIT_S, (victim, resumed)
    report = json.loads(report_path.read_text())
    f = report["frames"]
    print(f"frames: {f}")
    assert f["accounted"], f
    assert f["captured"] == f["delivered"] + f["dropped_total"]
    assert f["dropped"].get("lost", 0) >= 0
    for sid in ("grab", "infer", "render"):
        stage = report["stages"][sid]
        assert stage["restarts"] == 1, (sid, stage)
        assert stage["incarnations_reported"] >= 2, (sid, stage)
    # the restarted producer was recognised downstream as a new epoch, not a flood of stale frames
    assert report["stages"]["infer"]["counters"].get("stream_restarts", 0) >= 1
    assert report["stages"]["render"]["counters"].get("stream_restarts", 0) >= 1
    assert f["dropped"].get("late", 0) < 0.05 * f["captured"], f
    assert "restart 1 in 0.2 s" in out


def test_a_stage_that_keeps_crashing_is_given_up_and_the_run_fails(tmp_path: Path) -> None:
    config, _video = demo_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["restart"] = {"max_restarts": 2, "backoff_s": 0.05}
    data["stages"][2]["sinks"] = []
    config.write_text(yaml.safe_dump(data))
    sup = start_run(config, tmp_path / "report.json", duration=60)
    try:
        pid = wait_for_stages(sup, 3)["infer"]
        for attempt in range(3):
            os.kill(pid, signal.SIGKILL)
            if attempt < 2:
                pid = wait_for_new_pid(sup, "infer", pid)
    finally:
        out = finish(sup, timeout=60)
    assert sup.returncode == 1, out
    assert "infer crashed (signal 9) 3 times; giving up" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["exit"] == "stage infer kept crashing"
    assert report["stages"]["infer"]["restarts"] == 2
    assert report["frames"]["accounted"], report["frames"]


def paced_producer(spec: LinkSpec, seconds: float, fps: float, result) -> None:
    """Child process: publish for `seconds`; report the slowest send and the drops."""
    clock = WallClock()
    ctx = zmq.Context()
    stats = StageStats("producer", "grab", clock)
    tx = Sender(ctx, "link", spec, "producer", clock, stats)
    slowest = 0.0
    try:
        tx.wait_for_consumers(1, 10.0)
        t0 = time.monotonic()
        seq = 0
        while time.monotonic() - t0 < seconds:
            t = time.perf_counter()
            tx.send(make_frame(seq, (64, 64), clock.now_ns()))
            slowest = max(slowest, time.perf_counter() - t)
            seq += 1
            time.sleep(max(0.0, t0 + seq / fps - time.monotonic()))
        tx.send_eos(EndOfStream("s", 1, seq - 1), repeats=5)
        result.put({"sent": seq, "slowest_send_s": slowest, "drops": dict(stats.drops)})
    finally:
        tx.close()
        ctx.term()


def flaky_consumer(spec: LinkSpec) -> None:
    """Child process: receive until killed."""
    ctx = zmq.Context()
    rx = Receiver(ctx, "link", spec, "flaky", WallClock(), StageStats("flaky", "render", WallClock()))
    while True:
        rx.recv(100)


def counting_consumer(spec: LinkSpec, seconds: float, result) -> None:
    """Child process: receive until eos; report frames, the longest silence and the drops."""
    clock = WallClock()
    ctx = zmq.Context()
    stats = StageStats("steady", "render", clock)
    rx = Receiver(ctx, "link", spec, "steady", clock, stats)
    got = 0
    last = None
    longest_gap = 0.0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            msg = rx.recv(100)
            if msg is None:
                continue
            if msg.kind == "eos":
                break
            now = time.monotonic()
            if last is not None:
                longest_gap = max(longest_gap, now - last)
            last = now
            got += 1
        result.put({"got": got, "longest_gap_s": longest_gap, "drops": dict(stats.drops)})
    finally:
        rx.close()
        ctx.term()


def test_a_consumer_that_goes_away_and_comes_back_disturbs_no_one(ipc_dir: Path) -> None:
    # ipc (each process knows the path before the producer binds it), frames inline as over tcp
    spec = LinkSpec(endpoint=ipc_endpoint(ipc_dir, "l"), pattern="pubsub", mode="live", shm="off")
    q = CTX.Queue()
    steady = CTX.Process(target=counting_consumer, args=(spec, 30.0, q))
    steady.start()
    time.sleep(0.5)  # the scenario's timeline (not a wait for a condition): steady connects first
    producer = CTX.Process(target=paced_producer, args=(spec, 6.0, 100.0, q))
    producer.start()
    flaky = CTX.Process(target=flaky_consumer, args=(spec,))
    try:
        time.sleep(1.0)  # the steady consumer is the one the producer waited for
        flaky.start()
        time.sleep(1.5)  # the flaky consumer receives for a while ...
        os.kill(flaky.pid, signal.SIGKILL)  # gone without a goodbye
        flaky.join(5)
        time.sleep(1.0)  # ... is gone for a second ...
        flaky = CTX.Process(target=flaky_consumer, args=(spec,))
        flaky.start()  # and back
        results = [q.get(timeout=30), q.get(timeout=30)]
    finally:
        for p in (producer, steady, flaky):
            if p.is_alive():
                p.kill()
            p.join(5)
    prod = next(r for r in results if "sent" in r)
    cons = next(r for r in results if "got" in r)
    print(f"producer {prod}; steady consumer {cons}")
    assert not prod["drops"], prod  # never a frame refused for lack of consumers or overflow
    assert prod["slowest_send_s"] < 0.05, prod  # the producer never waited on anyone
    assert cons["got"] + sum(cons["drops"].values()) == prod["sent"], (prod, cons)
    assert cons["got"] >= 0.9 * prod["sent"], (prod, cons)
    assert cons["longest_gap_s"] < 0.3, cons  # the steady consumer never stalled
