"""`medstream profile RECORDING.msrec`: the report folder from a recording's traces."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from stream.frame import Frame
from stream.recording import RecordingWriter
from tools.profiling.chrome_trace import check_trace
from tools.profiling.cli import profile_recording
from tools.profiling.recording_source import is_recording

MS = 1_000_000


def write_recording(path: Path, n: int, skip: set[int]) -> dict[int, float]:
    """`n` frames of grab -> infer -> render at 30 fps, minus `skip`; returns glass ms by seq."""
    w = RecordingWriter(path, {"stage": "render", "created_ns": time.time_ns()})
    t0 = 10**18
    glass = {}
    for seq in range(n):
        if seq in skip:
            continue
        cap = t0 + seq * 33 * MS
        f = Frame("grab", seq, cap, cap + 50 * MS, np.full((8, 8), seq % 256, np.uint8), epoch=3)
        f.with_span("grab", cap - 4 * MS, cap)
        f.with_span("infer", cap + MS, cap + (6 + seq % 5) * MS)
        recorded = cap + (12 + seq % 7) * MS
        w.write_frame(f, "render", recorded)
        glass[seq] = (recorded - cap) / 1e6
    w.write_end({"frames": n - len(skip), "drops": {}}, t0 + n * 33 * MS)
    w.close()
    return glass


def test_profile_of_a_recording(tmp_path: Path) -> None:
    rec = tmp_path / "scan.msrec"
    glass = write_recording(rec, 120, skip={50, 51, 90})
    assert is_recording(str(rec)) and not is_recording(str(tmp_path / "missing"))
    out = tmp_path / "profile"
    s = profile_recording(str(rec), out, warmup=0, pass_percentile=99.0, plots=False)
    e2e = s["end_to_end"]
    g = np.array(list(glass.values()))
    assert e2e["delivered"] == 117 and e2e["budget_ms"] == pytest.approx(50.0)
    assert e2e["p50"] == pytest.approx(np.percentile(g, 50, method="inverted_cdf"), abs=1e-3)
    assert e2e["max"] == pytest.approx(g.max(), abs=1e-3)
    assert list(s["stages"]) == ["grab", "infer", "render"]
    assert s["stages"]["infer"]["p50"] == pytest.approx(
        np.percentile([5 + k % 5 for k in glass], 50, method="inverted_cdf"), abs=1e-3
    )
    assert s["recording"]["sequence_gaps"] == 3 and s["recording"]["complete"]
    assert (
        s["breakdown_ms"]["mean"]["infer->render"] > 0
    )  # render work is inside: only its end is known
    assert check_trace(json.loads((out / "trace.json").read_text())) == []
    assert (out / "index.html").exists() and (out / "frames.csv").exists()


def test_a_warmup_longer_than_the_recording_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said 'no frames were recorded: is the pipeline running...?' of a file of frames."""
    from tools.cli import main

    rec = tmp_path / "scan.msrec"
    write_recording(rec, 20, skip=set())
    out = str(tmp_path / "profile")
    assert main(["profile", str(rec), "--out", out, "--warmup", "50", "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert "all 20 frames fell in the warm-up (--warmup 50 per stream): nothing left" in err, err
    assert main(["profile", str(rec), "--out", out, "--warmup", "5", "--no-plots"]) == 0
