"""The OpenIGTLink sink over real sockets: a pyigtl client receives the image and the label map
as separate devices with the right shape, spacing and metadata; no client or a stalled client
never blocks the render loop."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl", reason="pip install 'medstream[igtl]'")

from stream.frame import Annotations, Frame  # noqa: E402
from stream.sinks import SINK_TYPES, SinkError, open_sink  # noqa: E402
from stream.sinks.igtl import IgtlSink, IgtlSpec  # noqa: E402

from .helpers import wait_until  # noqa: E402

TIMEOUT = 10.0
H, W = 96, 128


def us_frame(seq: int, fmt: str = "gray8") -> Frame:
    rng = np.random.default_rng(seq)
    shape = (H, W) if fmt == "gray8" else (H, W, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[20:40, 30 + seq % 10 : 60] = 2
    return Frame(
        "probe",
        seq,
        time.time_ns() - 12_000_000,
        0,
        image,
        fmt,
        parts={"mask": mask},
        annotations=Annotations(
            "us-seg", ["background", "anechoic", "lesion"], backend="onnxruntime"
        ),
        meta={"pixel_spacing_mm": [0.3, 0.2]},
    )


@pytest.fixture
def sink() -> Iterator[IgtlSink]:
    s = IgtlSink(IgtlSpec(port=0, send_timeout_s=0.5), "render")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def client(sink: IgtlSink) -> Iterator:
    c = pyigtl.OpenIGTLinkClient("127.0.0.1", sink.port)
    try:
        assert wait_until(lambda: sink.clients > 0, TIMEOUT), "the client did not connect"
        yield c
    finally:
        c.stop()


def receive(sink: IgtlSink, client, frames: list[Frame], device: str):
    """Write `frames` in turn (a client gets frames written after it connected) until `device`
    arrives."""
    end = time.monotonic() + TIMEOUT
    i = 0
    while time.monotonic() < end:
        frame = frames[min(i, len(frames) - 1)]
        sink.write(np.zeros((H, W, 3), np.uint8), frame)
        i += 1
        msg = client.wait_for_message(device, timeout=0.2)
        if msg is not None:
            return msg
    pytest.fail(f"{device} never arrived")


def test_image_and_mask_arrive_with_shape_spacing_and_metadata(sink, client) -> None:
    assert SINK_TYPES["igtl"][0] is IgtlSpec
    frame = us_frame(7)
    image = receive(sink, client, [frame], "render_image")
    mask = client.wait_for_message("render_mask", timeout=TIMEOUT)
    info = client.wait_for_message("render_info", timeout=TIMEOUT)
    assert image.image.shape == (1, H, W) and image.image.dtype == np.uint8
    assert np.array_equal(image.image[0], frame.image)
    assert mask.image.shape == (1, H, W) and np.array_equal(mask.image[0], frame.parts["mask"])
    for msg in (image, mask):
        m = msg.ijk_to_world_matrix
        # column index along x at col_mm, row index along y at row_mm
        assert np.linalg.norm(m[:3, 0]) == pytest.approx(0.2, abs=1e-6)
        assert np.linalg.norm(m[:3, 1]) == pytest.approx(0.3, abs=1e-6)
        assert m[0, 0] > 0 and m[1, 1] > 0
        assert msg.metadata["seq"] == "7" and msg.metadata["stream"] == "probe"
        assert msg.metadata["capture_ns"] == str(frame.capture_ns)
        assert msg.metadata["model"] == "us-seg" and msg.metadata["backend"] == "onnxruntime"
        assert json.loads(msg.metadata["labels"]) == ["background", "anechoic", "lesion"]
        assert 12.0 <= float(msg.metadata["latency_ms"]) < 5000
        assert msg.timestamp == pytest.approx(frame.capture_ns / 1e9, abs=1e-3)
    meta = json.loads(info.string)
    assert meta["seq"] == "7" and meta["pixel_spacing_mm"] == [0.3, 0.2]


def test_colour_frames_are_sent_as_rgb(sink, client) -> None:
    frame = us_frame(3, "bgr8")
    msg = receive(sink, client, [frame], "render_image")
    assert msg.image.shape == (1, H, W, 3)
    assert np.array_equal(msg.image[0], cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))


def test_no_client_never_blocks_and_is_counted() -> None:
    sink = IgtlSink(IgtlSpec(port=0), "render")
    big = Frame("s", 0, time.time_ns(), 0, np.zeros((1080, 1920, 3), np.uint8), "bgr8")
    try:
        t0 = time.perf_counter()
        for _ in range(300):
            sink.write(big.image, big)
        elapsed = time.perf_counter() - t0
    finally:
        sink.close()
    # sending 300 frames of 6 MB would take seconds: a generous bound for a loaded machine
    assert elapsed < 1.0, elapsed
    assert sink.drops() == {"no_client": 300}


def test_a_stalled_client_never_blocks_the_pipeline_and_is_dropped(sink) -> None:
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", sink.port))  # connects, never reads
    try:
        assert wait_until(lambda: sink.clients > 0, TIMEOUT), "the client did not connect"
        frame = Frame("s", 0, time.time_ns(), 0, np.zeros((1080, 1920), np.uint8), "gray8")
        worst, seq = 0.0, 0
        end = time.monotonic() + TIMEOUT
        while sink.clients > 0 and time.monotonic() < end:  # until the stalled client is dropped
            frame.seq = seq
            t0 = time.perf_counter()
            sink.write(np.zeros((1, 1, 3), np.uint8), frame)
            worst = max(worst, time.perf_counter() - t0)
            seq += 1
            time.sleep(0.005)  # a render loop at up to 200 fps
        assert sink.clients == 0, "a stalled client was never disconnected"
        # it took the 0.5 s send timeout, all the while the render loop wrote on
        assert seq >= 20, seq
        sink.write(np.zeros((1, 1, 3), np.uint8), frame)  # and writes on after the drop
        # the render loop never waits on the client: a write that did would take the client's
        # 0.5 s send timeout; 0.1 s is a sanity bound for a loaded machine, not a speed target
        assert worst < 0.1, worst
    finally:
        stalled.close()
    drops = sink.drops()
    assert drops.get("superseded", 0) + drops.get("no_client", 0) > 0, drops  # counted


def test_open_errors_are_one_line() -> None:
    with pytest.raises(SinkError, match="device names are at most 20 ASCII bytes"):
        IgtlSink(IgtlSpec(port=0), "a-very-long-render-stage")
    holder = IgtlSink(IgtlSpec(port=0), "r1")
    port = holder.port
    try:
        with pytest.raises(
            SinkError, match=rf"^igtl sink 'r2': cannot listen on 127.0.0.1:{port}: "
        ):
            open_sink({"type": "igtl", "port": port}, "s", "r2")
    finally:
        holder.close()


def test_the_mask_is_clipped_to_the_frames_imaging_region(sink, client) -> None:
    frame = us_frame(3)
    frame.meta["roi"] = {"source": "config", "polygon": [[0, 0], [44, 0], [44, 95], [0, 95]]}
    receive(sink, client, [frame], "render_image")
    mask = client.wait_for_message("render_mask", timeout=TIMEOUT)
    info = client.wait_for_message("render_info", timeout=TIMEOUT)
    assert json.loads(info.string)["roi"] == frame.meta["roi"]
    want = frame.parts["mask"].copy()
    want[:, 45:] = 0
    assert want.any() and not np.array_equal(want, frame.parts["mask"])
    assert np.array_equal(mask.image[0], want)


def test_clip_mask_to_region_scales_the_region_and_empties_unknown_ones() -> None:
    from stream.roi.clip import clip_mask_to_region

    mask = np.ones((50, 60), np.uint8)
    roi = {"source": "auto", "polygon": [[0, 0], [59, 0], [59, 49], [0, 49]]}  # left half of 120
    clipped, why = clip_mask_to_region(mask, {"roi": roi}, (50, 120))
    assert why == "" and clipped[:, :30].all() and not clipped[:, 31:].any()
    assert clip_mask_to_region(mask, {"roi": None}, (50, 60))[1] == "no_roi"
    assert not clip_mask_to_region(mask, {"roi": None}, (50, 60))[0].any()
    ood = {"applicability": {"applicable": False, "score": 2.0, "threshold": 1.0}}
    assert clip_mask_to_region(mask, ood, (50, 60))[1] == "ood"
    assert clip_mask_to_region(mask, {}, (50, 60))[0] is mask
