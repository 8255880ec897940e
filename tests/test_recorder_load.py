"""The recorder under load, as a pipeline: 1080p BGR at 60 fps over a lossless link to disk.
Every sequence number is in the recording (or the run fails); a recorder SIGKILLed mid-run
leaves a file that reads back, gap-free, to its last whole frame, and the frames lost in the
crash are accounted for in the report. The rate it keeps is `medstream bench --only recorder`'s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tools.bench.recorder import FPS, SHAPE, recorded_seqs, recorder_config

from .helpers import wait_until
from .test_faults import wait_for_new_pid
from .test_pipeline import finish, start_run, wait_for_stages

pytestmark = pytest.mark.slow  # `medstream run` under load

FRAMES = 240  # 4 s of 1080p BGR: about 1.5 GB written


def remove(paths) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def test_recorder_keeps_every_frame_of_1080p_at_60_fps(tmp_path: Path) -> None:
    out = tmp_path / "out" / "rec.msrec"
    config = recorder_config(tmp_path, str(out), FRAMES)
    report_path = tmp_path / "report.json"
    try:
        sup = start_run(config, report_path, duration=120)
        output = finish(sup, timeout=180)
        assert sup.returncode == 0, output
        report = json.loads(report_path.read_text())
        f = report["frames"]
        print(f"frames {f}; fps {report['fps']}; grab counters {report['stages']['grab']['counters']}")
        assert f["captured"] == f["delivered"] == FRAMES and f["dropped_total"] == 0, f
        seqs, reader = recorded_seqs(out)
        with reader:
            assert reader.end is not None and reader.end["frames"] == FRAMES
            assert reader.truncated_bytes == 0
            assert reader.read_frame(0).image.shape == SHAPE
        assert seqs == list(range(FRAMES))  # every sequence number, in order, once
        # the rate it keeps is judged by `medstream bench --only recorder`; here a sanity bound
        assert report["fps"]["captured"] >= 0.3 * FPS, report["fps"]
    finally:
        remove([out, tmp_path / "source.msrec"])


def test_recorder_killed_under_load_reads_back_to_its_last_whole_frame(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    config = recorder_config(tmp_path, str(out_dir / "{stage}-{start}.msrec"), FRAMES)
    report_path = tmp_path / "report.json"
    try:
        sup = start_run(config, report_path, duration=120)
        try:
            pid = wait_for_stages(sup, 2)["render"]
            def a_second_written() -> bool:  # kill it once it has written a second's worth
                files = list(out_dir.glob("*.msrec"))
                return bool(files) and files[0].stat().st_size > FPS * np.prod(SHAPE)

            wait_until(a_second_written, 30, 0.05)
            os.kill(pid, signal.SIGKILL)
            wait_for_new_pid(sup, "render", pid)
        finally:
            output = finish(sup, timeout=180)
        assert sup.returncode == 0, output
        first, second = sorted(out_dir.glob("*.msrec"), key=lambda p: p.stat().st_mtime)
        seqs1, r1 = recorded_seqs(first)
        with r1:
            assert r1.end is None  # it never closed
            assert seqs1 == list(range(len(seqs1))) and len(seqs1) >= FPS // 2  # gap-free to the end
        seqs2, r2 = recorded_seqs(second)
        with r2:
            assert r2.end is not None
        assert seqs2 == list(range(seqs2[0], seqs2[0] + len(seqs2)))  # gap-free after the restart
        assert seqs2[-1] == FRAMES - 1 and seqs2[0] > seqs1[-1]
        report = json.loads(report_path.read_text())
        f = report["frames"]
        recorded = len(seqs1) + len(seqs2)
        print(f"frames {f}; recorded {len(seqs1)} + {len(seqs2)}; "
              f"truncated bytes {r1.truncated_bytes}; missing seqs {seqs1[-1] + 1}..{seqs2[0] - 1}")
        assert f["accounted"] and f["captured"] == FRAMES, f
        # every frame not in a recording is counted as dropped (no consumer while the recorder
        # restarted) or lost (in flight when it died)
        assert FRAMES - recorded <= f["dropped_total"], (f, recorded)
        assert report["stages"]["render"]["restarts"] == 1
    finally:
        remove([*out_dir.glob("*.msrec"), tmp_path / "source.msrec"])


def test_recorder_on_a_full_disk_fails_the_run_loudly(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a disk that fills up)")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        config = recorder_config(tmp_path, str(small / "rec.msrec"), frames=30)
        sup = start_run(config, tmp_path / "report.json", duration=60)
        output = finish(sup, timeout=120)
        assert sup.returncode == 1, output
        assert "No space left on device" in output, output
        assert "render failed" in output, output  # at once, or while stopping
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["frames"]["sink_drops"]["render/recorder"] >= 25, report["frames"]
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
        remove([tmp_path / "source.msrec"])
