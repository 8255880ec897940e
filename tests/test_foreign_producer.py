"""A producer written from docs/protocol.md alone (raw pyzmq, hand-made JSON headers) feeds the
real infer and render stages: the run report accounts for its frames from what they saw."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from .pipelines import light_config, medstream

SIZE = 256
FRAMES = 45


def _header(link_seq: int, seq: int, now: int, epoch: int) -> bytes:
    # docs/protocol.md, sections 2-4: every key a frame needs, nothing medstream-specific
    return json.dumps({
        "v": 1, "kind": "frame", "sender": "probe", "link_seq": link_seq, "sent_ns": now,
        "stream": "probe", "epoch": epoch, "seq": seq, "capture_ns": now,
        "deadline_ns": now + 10**9, "format": "gray8",
        "parts": [{"name": "image", "dtype": "uint8", "shape": [SIZE, SIZE]}],
    }).encode()


@pytest.mark.slow
def test_a_foreign_producers_frames_are_all_accounted(tmp_path: Path) -> None:
    cfg = light_config(tmp_path, size=SIZE)
    report_path = tmp_path / "report.json"
    run = medstream("run", str(cfg), "--stages", "infer,render", "--duration", "60",
                    "--report", str(report_path))
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 1000)
    try:
        (tmp_path / "run").mkdir(exist_ok=True)
        pub.bind(f"ipc://{tmp_path}/run/frames.ipc")
        assert pub.poll(60_000), "the infer stage never subscribed"
        assert pub.recv()[:1] == b"\x01"
        time.sleep(1.0)  # let render subscribe to infer before the first frame
        epoch = time.time_ns()
        image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
        for seq in range(FRAMES):
            now = time.time_ns()
            pub.send_multipart([b"probe", _header(seq + 1, seq, now, epoch), image])
            time.sleep(1 / 15)
        eos = {"v": 1, "kind": "eos", "sender": "probe", "link_seq": FRAMES,
               "sent_ns": time.time_ns(), "stream": "probe", "epoch": epoch,
               "last_seq": FRAMES - 1}
        for _ in range(3):
            pub.send_multipart([b"probe", json.dumps(eos).encode()])
            time.sleep(0.02)
        _, stderr = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        pub.close()
        ctx.term()
    assert run.returncode == 0, stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert not report["exit"].startswith("duration"), report["exit"]  # its end of stream ended it
    frames = report["frames"]
    key = f"probe@{epoch}"
    assert frames["producers_without_stats"][key]["counted_by"] == "infer"
    assert frames["producers_without_stats"][key]["seq"] == [0, FRAMES - 1]
    assert frames["captured"] == FRAMES  # every frame reached infer over ipc at 15 fps
    assert frames["delivered"] > 0 and frames["accounted"], frames
    assert frames["delivered"] + frames["dropped_total"] == FRAMES
    assert "lost" not in frames["dropped"]
