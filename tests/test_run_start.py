"""What `medstream validate` and `medstream run` check before a stage starts, the run dir lock,
the frozen config of restarted stages, and the exit statuses of a run (stream.exit_codes)."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from stream.cli import main as medstream
from stream.config import load_config, load_config_file
from stream.endpoints import IPC_PATH_MAX, check_endpoint
from stream.exit_codes import EXIT_BUSY, EXIT_CONFIG, EXIT_FAILED, EXIT_NO_FRAMES, EXIT_SETUP
from stream.frozen_config import write_frozen
from stream.run_lock import RunDirBusy, RunLock, run_dir_holder
from stream.spec import ConfigError

from .test_pipeline import finish, stage_pids, start_run, wait_for_stages

ROOT = Path(__file__).resolve().parent.parent
DEMO = yaml.safe_load((ROOT / "configs" / "ultrasound_seg.yaml").read_text())
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def demo(tmp_path: Path, **top: object) -> dict:
    """The demo graph with its run dir in `tmp_path` and no sinks (no ports, no files)."""
    data = copy.deepcopy(DEMO)
    data["run_dir"] = str(tmp_path / "run")
    data["stages"][2]["sinks"] = []
    data.update(top)
    return data


def write(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stream.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


# -- validate: every problem run would meet at start, one line naming the key ------------------


def _edit(data: dict, tmp_path: Path, case: str) -> None:
    grab, infer, _render = data["stages"]
    if case == "unknown-model":
        infer["engine"]["model"] = "us-segg"
    elif case == "unknown-model-in-chain":
        infer["engine"]["model"] = "classical-median+us-segx"
    elif case == "unknown-classical-method":
        infer["engine"]["model"] = "classical-mediann+us-seg"
    elif case == "missing-model-file":
        infer["engine"]["model"] = str(tmp_path / "gone.onnx")
    elif case == "fallback-model":
        infer["fallback"] = {"model": "us-segg"}
    elif case == "port-not-a-number":
        data["links"]["frames"]["endpoint"] = "tcp://127.0.0.1:notaport"
    elif case == "port-out-of-range":
        data["links"]["frames"]["endpoint"] = "tcp://127.0.0.1:70000"
    elif case == "no-port":
        data["links"]["frames"]["endpoint"] = "tcp://127.0.0.1"
    elif case == "ipc-path-too-long":
        data["run_dir"] = str(tmp_path / ("d" * 120))
    elif case == "missing-key-files":
        data["security"] = {"curve": True, "keys_dir": str(tmp_path / "nokeys")}
    elif case == "missing-dicom":
        grab["source"] = {"type": "dicom", "path": str(tmp_path / "echo.dcm")}
    elif case == "missing-video-file":
        grab["source"] = {"type": "capture", "input": str(tmp_path / "scan.mp4")}
    elif case == "missing-folder":
        grab["source"] = {"type": "folder", "path": str(tmp_path / "frames")}
    elif case == "missing-recording":
        grab["source"] = {"type": "replay", "path": str(tmp_path / "scan.msrec")}
    elif case == "unused-link":
        data["links"]["spare"] = {"endpoint": "ipc://{run_dir}/spare.ipc"}
    elif case == "internal-key":
        data["source_file"] = "x.yaml"
    elif case == "top-level-typo":
        data["bugdet_ms"] = 40


VALIDATE_CASES = {
    "unknown-model": "stages[1].engine.model: unknown model 'us-segg'",
    "unknown-model-in-chain": "stages[1].engine.model: chain 'classical-median+us-segx': "
    "unknown model 'us-segx'",
    "unknown-classical-method": "stages[1].engine.model: unknown classical method "
    "'classical-mediann' in chain",
    "missing-model-file": "stages[1].engine.model: model file",
    "fallback-model": "stages[1].fallback.model: unknown model 'us-segg'",
    "port-not-a-number": "links.frames.endpoint: port 'notaport' is not a number in 1-65535",
    "port-out-of-range": "links.frames.endpoint: port '70000' is not a number in 1-65535",
    "no-port": "links.frames.endpoint: expected tcp://HOST:PORT",
    "ipc-path-too-long": "links.frames.endpoint: ipc path is ",
    "missing-key-files": "security.keys_dir: grab's secret key:",
    "missing-dicom": "stages[0].source.path: {tmp}/echo.dcm does not exist (expected a file)",
    "missing-video-file": "stages[0].source.input: {tmp}/scan.mp4 does not exist",
    "missing-folder": "stages[0].source.path: {tmp}/frames does not exist (expected a folder)",
    "missing-recording": "stages[0].source.path: {tmp}/scan.msrec does not exist",
    "unused-link": "links.spare: no stage uses this link",
    "internal-key": "source_file: unknown top-level key; allowed keys: budget_ms",
    "top-level-typo": "bugdet_ms: unknown top-level key; allowed keys: budget_ms",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(VALIDATE_CASES))
def test_validate_names_the_key_of_each_problem_run_would_meet(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = demo(tmp_path)
    _edit(data, tmp_path, case)
    config = write(tmp_path, data)
    assert medstream(["validate", str(config)]) == EXIT_CONFIG
    out = capsys.readouterr()
    assert "ok" not in out.out
    lines = out.err.strip().splitlines()
    expected = VALIDATE_CASES[case].format(tmp=tmp_path)
    assert any(line.startswith(f"medstream: config error: {expected}") for line in lines), lines
    assert all(line.startswith("medstream: config error: ") for line in lines), lines


@pytest.mark.slow
def test_validate_accepts_the_demo_and_a_good_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = demo(tmp_path)
    data["stages"][1]["engine"]["model"] = "classical-median+us-seg"
    assert medstream(["validate", str(write(tmp_path, data))]) == 0
    assert ": ok (3 stages" in capsys.readouterr().out


@pytest.mark.slow
def test_validate_notes_a_stage_that_would_wait_for_a_consumer_it_has_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = demo(tmp_path)
    data["stages"][2]["input"] = "frames"  # render skips infer: nothing reads infer's results
    assert medstream(["validate", str(write(tmp_path, data))]) == 0
    out = capsys.readouterr()
    assert ": ok (3 stages" in out.out
    assert out.err.startswith("medstream: note: infer waits up to 20 s for 1 consumer(s) on link")


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:5555", "tcp://*:5555", "tcp://[::1]:5555", "ipc://runs/x/a.ipc",
     "ipc://@abstract", "inproc://x"],
)
def test_well_formed_endpoints_pass(endpoint: str) -> None:
    check_endpoint(endpoint, "links.x.endpoint")


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:notaport", "tcp://127.0.0.1:0", "tcp://:5555", "tcp://host", "tcp://h: 1",
     "ipc://", "udp://x:1", "ipc://" + "p" * (IPC_PATH_MAX + 1)],
)
def test_malformed_endpoints_fail_naming_the_key(endpoint: str) -> None:
    with pytest.raises(ConfigError, match=r"^links\.x\.endpoint: "):
        check_endpoint(endpoint, "links.x.endpoint")


def test_ipc_path_limit_counts_the_path_after_run_dir_expansion(tmp_path: Path) -> None:
    # the stats_pub socket has the longest name of the run dir's sockets
    fits = "r" * (IPC_PATH_MAX - len("/stats_pub.ipc"))
    load_config(demo(tmp_path, run_dir=fits))
    with pytest.raises(ConfigError, match=r"^stats_pub: ipc path is 108 bytes"):
        load_config(demo(tmp_path, run_dir=fits + "r"))


# -- run: the same checks before any stage starts ------------------------------------------------


@pytest.mark.slow
def test_run_refuses_an_unknown_model_before_starting_a_stage(tmp_path: Path) -> None:
    data = demo(tmp_path)
    data["stages"][1]["engine"]["model"] = "us-segg"
    done = run_cli("run", str(write(tmp_path, data)), "--duration", "20")
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert done.stderr.strip().splitlines() == [
        "medstream: config error: stages[1].engine.model: unknown model 'us-segg': not a "
        "bundled model (bundled: " + done.stderr.split("(bundled: ")[1].strip()
    ]
    assert "started" not in done.stdout + done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_over_long_ipc_path_fails_the_run_at_once_not_with_zero_frames(tmp_path: Path) -> None:
    """Before: every stage died with `ZMQError: File name too long`, was restarted, exit 0."""
    done = run_cli("run", str(write(tmp_path, demo(tmp_path, run_dir=str(tmp_path / ("d" * 110))))))
    assert done.returncode == EXIT_CONFIG, done.stdout + done.stderr
    assert "ipc path is" in done.stderr and "the OS allows at most 107" in done.stderr
    assert "Traceback" not in done.stderr and "started" not in done.stderr


@pytest.mark.slow
def test_report_into_a_folder_that_cannot_be_written_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    start = time.monotonic()
    done = run_cli("run", str(write(tmp_path, demo(tmp_path))), "--duration", "20",
                   "--report", str(blocker / "out" / "report.json"))
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"medstream: config error: --report: cannot create the folder {blocker / 'out'}: "
        f"{blocker} is not a folder"
    ]
    assert "started" not in done.stdout and time.monotonic() - start < 20


# -- the run dir lock and busy endpoints ----------------------------------------------------------


def test_run_lock_names_its_holder_and_is_taken_over_when_released(tmp_path: Path) -> None:
    first = RunLock(tmp_path / "run", "a.yaml")
    first.acquire()
    try:
        with pytest.raises(RunDirBusy, match=rf"in use by another run: pid {os.getpid()} on "):
            RunLock(tmp_path / "run", "b.yaml").acquire()
        holder = run_dir_holder(tmp_path / "run")
        assert holder is not None and "config a.yaml" in holder
    finally:
        first.release()
    assert run_dir_holder(tmp_path / "run") is None
    second = RunLock(tmp_path / "run", "b.yaml")
    second.acquire()
    second.release()


@pytest.mark.slow
def test_a_second_run_of_a_running_pipeline_is_refused_and_a_dead_runs_lock_taken_over(
    tmp_path: Path,
) -> None:
    """Before: the second run took over the first run's ipc endpoints and its frames."""
    config = write(tmp_path, demo(tmp_path))
    first = start_run(config, tmp_path / "first.json", duration=60)
    try:
        wait_for_stages(first, 3)
        start = time.monotonic()
        report = str(tmp_path / "b.json")
        second = run_cli("run", str(config), "--duration", "5", "--report", report)
        assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
        assert time.monotonic() - start < 15
        line = f"medstream: cannot start: run_dir {tmp_path / 'run'} is in use by another run: "
        assert second.stderr.strip().splitlines()[0].startswith(line), second.stderr
        assert f"pid {first.pid} on " in second.stderr and f"config {config}" in second.stderr
        assert "started" not in second.stderr and not (tmp_path / "b.json").exists()
        check = run_cli("validate", str(config))
        assert check.returncode == EXIT_BUSY and f"pid {first.pid}" in check.stderr
        # the first run is untouched by the attempt
        assert len(stage_pids(first)) == 3
        os.kill(first.pid, signal.SIGKILL)  # its stages die with it; the kernel frees the lock
        first.wait(timeout=30)
        psutil.wait_procs([p for p in psutil.process_iter() if _is_stage_of(p, config)], 10)
    finally:
        if first.poll() is None:
            first.kill()
        finish(first)
    third = run_cli("run", str(config), "--duration", "4", "--report", str(tmp_path / "c.json"))
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"took over the lock of a run that is gone (pid {first.pid})" in third.stderr
    assert json.loads((tmp_path / "c.json").read_text())["frames"]["delivered"] > 0


def _is_stage_of(proc: psutil.Process, config: Path) -> bool:
    try:
        return "stage" in proc.cmdline() and str(config.parent) in " ".join(proc.cmdline())
    except psutil.Error:
        return False


@pytest.mark.slow
def test_a_busy_tcp_endpoint_is_refused_before_any_stage_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = demo(tmp_path)
        data["links"]["results"]["endpoint"] = f"tcp://127.0.0.1:{port}"
        done = run_cli("run", str(write(tmp_path, data)), "--duration", "20")
    assert done.returncode == EXIT_BUSY, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"medstream: cannot start: links.results.endpoint: tcp://127.0.0.1:{port} is in use "
        "(Address already in use)"
    ]


# -- stages that cannot start, frozen config, exit statuses --------------------------------------


@pytest.mark.slow
def test_a_stage_whose_setup_fails_exits_78_is_not_restarted_and_fails_the_run(
    tmp_path: Path,
) -> None:
    """A file that exists (so the preflight passes) but is no video: the grab stage cannot open
    it. Before: exit 2 for this and a crash-looping traceback for a failed bind or frame log."""
    video = tmp_path / "scan.mp4"
    video.write_bytes(b"not a video" * 100)
    data = demo(tmp_path)
    data["stages"][0]["source"] = {"type": "capture", "input": str(video)}
    start = time.monotonic()
    done = run_cli("run", str(write(tmp_path, data)), "--duration", "30")
    out = done.stdout + done.stderr
    assert done.returncode == EXIT_SETUP, out
    assert "grab could not start (exit 78: its setup failed, see its error above); " in out
    assert out.count("started grab") == 1 and "restart 1" not in out and "Traceback" not in out
    assert f"[grab] ERROR capture source: cannot open {video}" in out
    assert time.monotonic() - start < 25


@pytest.mark.slow
def test_a_restarted_stage_loads_the_frozen_config_not_the_edited_yaml(tmp_path: Path) -> None:
    """Before: the restarted stage re-read the YAML from disk, here a config with an unknown
    model that was never validated, and the run failed."""
    config = write(tmp_path, demo(tmp_path))
    original = config.read_text()
    report = tmp_path / "report.json"
    sup = start_run(config, report, duration=10)
    seen = []
    try:
        pid = wait_for_stages(sup, 3)["infer"]
        assert sup.stdout is not None
        while not any("[infer] INFO model us-seg on" in line for line in seen):
            line = sup.stdout.readline()  # the run ends after 10 s: this cannot hang
            assert line, "".join(seen)
            seen.append(line)
        time.sleep(1)  # the first infer has handled frames and pushed its stats
        edited = yaml.safe_load(original)
        edited["stages"][1]["engine"]["model"] = "us-segg"
        config.write_text(yaml.safe_dump(edited))
        os.kill(pid, signal.SIGKILL)
    finally:
        out = "".join(seen) + finish(sup, timeout=60)
    assert sup.returncode == 0, out
    assert out.count("[infer] INFO model us-seg on") == 2, out  # both loaded the frozen model
    result = json.loads(report.read_text())
    assert result["stages"]["infer"]["restarts"] == 1
    assert result["stages"]["infer"]["incarnations_reported"] == 2
    assert result["config"] == str(config)
    assert result["frames"]["delivered"] > 0 and "us-segg" not in out
    frozen = tmp_path / "run" / "config.frozen.yaml"
    assert load_config_file(frozen).stage("infer").engine.model == "us-seg"
    assert frozen.stat().st_mode & 0o222 == 0  # read-only


def test_frozen_copy_loads_as_the_validated_config_naming_the_users_file(tmp_path: Path) -> None:
    config = write(tmp_path, demo(tmp_path))
    cfg = load_config_file(config)
    frozen = write_frozen(cfg)
    again = load_config_file(frozen)
    assert again.source_file == str(config.resolve())
    assert again.document == cfg.document and again.links == cfg.links
    write_frozen(cfg)  # a later run replaces the read-only copy


@pytest.mark.slow
def test_a_run_that_delivers_no_frame_exits_non_zero(tmp_path: Path) -> None:
    """Every frame misses a 0.1 ms budget. Before: exit 0."""
    config = write(tmp_path, demo(tmp_path, budget_ms=0.1))
    done = run_cli("run", str(config), "--duration", "4", "--report", str(tmp_path / "r.json"))
    out = done.stdout + done.stderr
    assert done.returncode == EXIT_NO_FRAMES, out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames"]["captured"] > 0 and report["frames"]["delivered"] == 0
    assert "the run delivered no frame" in out
    assert "medstream: run failed (exit 3): no frame was delivered (stopped: duration 4 s" in out
    assert report["supervisor"]["exit_status"] == EXIT_NO_FRAMES


@pytest.mark.slow
def test_the_text_report_is_printed_even_when_writing_the_json_fails(tmp_path: Path) -> None:
    """The report folder passes the start check, then a file takes its place during the run.
    Before: the JSON was written first, so a failed write lost the text report too."""
    folder = tmp_path / "out"
    sup = start_run(write(tmp_path, demo(tmp_path)), folder / "report.json", duration=5)
    try:
        wait_for_stages(sup, 3)
        folder.write_text("a file where the report's folder would be made")
    finally:
        out = finish(sup, timeout=60)
    assert sup.returncode == EXIT_FAILED, out
    assert out.index("medstream run report: ultrasound-seg") < out.index(
        f"medstream: cannot write the report to {folder / 'report.json'}"
    )
    assert "Traceback" not in out


@pytest.mark.slow
def test_exit_statuses_are_listed_in_run_help_and_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        medstream(["run", "--help"])
    help_text = capsys.readouterr().out
    doc = (ROOT / "docs" / "reliability.md").read_text()
    for code in (0, EXIT_FAILED, EXIT_CONFIG, EXIT_NO_FRAMES, EXIT_BUSY, EXIT_SETUP):
        assert f"\n  {code:<3} " in help_text, code
        assert f"\n| {code} | " in doc, code


@pytest.mark.slow
def test_validate_of_a_graph_across_hosts_does_not_call_another_hosts_address_busy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tcp endpoints are bound and released to see whether they are free; an address of another
    host (TEST-NET-1, never assigned) cannot be bound here but is not "in use"."""
    data = demo(tmp_path, security={"insecure": True})
    data["links"]["frames"]["endpoint"] = "tcp://192.0.2.7:5601"
    assert medstream(["validate", str(write(tmp_path, data))]) == 0, capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        data["links"]["results"]["endpoint"] = f"tcp://127.0.0.1:{busy.getsockname()[1]}"
        assert medstream(["validate", str(write(tmp_path, data))]) == EXIT_BUSY
    assert "medstream: busy: links.results.endpoint: tcp://127.0.0.1:" in capsys.readouterr().err
