"""ViewerSink over real HTTP on 127.0.0.1 (ephemeral ports, timeouts on every read)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from stream.frame import Frame
from stream.sinks import SinkError, ViewerSink, ViewerSpec

TIMEOUT = 5.0


@pytest.fixture
def viewer() -> Iterator[ViewerSink]:
    sink = ViewerSink(ViewerSpec(port=0, title="Probe <1>"), "viewer-test")
    try:
        yield sink
    finally:
        sink.close()


def _frame(seq: int) -> Frame:
    return Frame("us", seq, 0, 0, np.zeros((1, 1), np.uint8))


def _solid(value: int, h: int = 120, w: int = 160) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _get(sink: ViewerSink, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class MjpegClient:
    """Reads parts of /stream.mjpg one at a time."""

    def __init__(self, sink: ViewerSink) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=TIMEOUT)
        self.conn.request("GET", "/stream.mjpg")
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        ctype = self.resp.getheader("Content-Type")
        assert ctype.startswith("multipart/x-mixed-replace; boundary=")
        self.boundary = ctype.split("boundary=")[1].encode()

    def next_part(self) -> tuple[int, np.ndarray]:
        line = self.resp.readline()
        assert line.strip() == b"--" + self.boundary, line
        headers = {}
        while (line := self.resp.readline().strip()) != b"":
            key, value = line.decode().split(":", 1)
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        data = self.resp.read(int(headers["content-length"]))
        assert self.resp.read(2) == b"\r\n"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        return int(headers["x-frame-seq"]), image

    def close(self) -> None:
        self.conn.close()


def test_port_zero_binds_an_ephemeral_port(viewer):
    assert 0 < viewer.port < 65536
    assert viewer.url == f"http://127.0.0.1:{viewer.port}/"


def test_frame_jpg_is_503_before_the_first_frame(viewer):
    status, _, body = _get(viewer, "/frame.jpg")
    assert status == 503 and b"no frame yet" in body


def test_frame_jpg_is_a_jpeg_of_the_newest_frame(viewer):
    viewer.write(_solid(30, 90, 170), _frame(1))
    viewer.write(_solid(200, 90, 170), _frame(2))
    status, headers, body = _get(viewer, "/frame.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (90, 170, 3)
    assert abs(int(np.median(image)) - 200) <= 3


def test_jpeg_is_encoded_once_per_frame_and_only_when_asked(viewer):
    for seq in range(10):
        viewer.write(_solid(seq), _frame(seq))
    assert viewer.stats()["viewer"]["frames_encoded"] == 0
    for _ in range(3):
        assert _get(viewer, "/frame.jpg")[0] == 200
    viewer_stats = viewer.stats()["viewer"]
    assert viewer_stats["frames_encoded"] == 1 and viewer_stats["frames_written"] == 10


def test_mjpeg_stream_delivers_new_frames_as_they_are_written(viewer):
    client = MjpegClient(viewer)
    try:
        viewer.write(_solid(20), _frame(1))
        seq_a, image_a = client.next_part()
        viewer.write(_solid(220), _frame(2))
        seq_b, image_b = client.next_part()
        assert (seq_a, seq_b) == (1, 2)
        assert viewer.stats()["viewer"]["connections"] == 1
        assert image_a.shape == image_b.shape == (120, 160, 3)
        assert np.median(image_a) < 40 and np.median(image_b) > 200
    finally:
        client.close()


def test_mjpeg_client_gets_the_newest_frame_not_a_backlog(viewer):
    noise = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    client = MjpegClient(viewer)
    try:
        viewer.write(noise, _frame(0))
        assert client.next_part()[0] == 0
        for seq in range(1, 51):  # a burst: writes take microseconds, each encode milliseconds
            viewer.write(noise.copy(), _frame(seq))
        seqs = []
        deadline = time.monotonic() + TIMEOUT
        while not seqs or seqs[-1] != 50:
            assert time.monotonic() < deadline
            seqs.append(client.next_part()[0])
        assert seqs == sorted(set(seqs))
        assert len(seqs) <= 10, seqs  # a backlog would replay all 50
    finally:
        client.close()


def test_a_stalled_client_never_slows_writes_or_other_clients(viewer):
    stalled = socket.create_connection(("127.0.0.1", viewer.port), timeout=TIMEOUT)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")  # and never reads
    fast = MjpegClient(viewer)
    try:
        noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        worst = 0.0
        for seq in range(40):  # ~40 x 0.3 MB of JPEG: far more than the socket buffers hold
            image = noise.copy()
            image[:, :, 0] = seq
            t0 = time.perf_counter()
            viewer.write(image, _frame(seq))
            worst = max(worst, time.perf_counter() - t0)
            got = fast.next_part()[0]
            assert got <= seq
        # a write that waited on the stalled client would take its socket timeout (seconds);
        # 0.25 s is a sanity bound for a loaded machine, not a speed target
        assert worst < 0.25, f"write() took {worst * 1e3:.1f} ms"
        assert got == 39
    finally:
        fast.close()
        stalled.close()


def test_stats_json_reflects_update_stats(viewer):
    viewer.update_stats(
        {
            "fps": 59.5,
            "latency_ms": {"p50": 11.0, "p99": 19.5},
            "drops": {"late": 3},
            "backend": "onnxruntime",
        }
    )
    viewer.write(_solid(1), _frame(7))
    status, headers, body = _get(viewer, "/stats.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    stats = json.loads(body)
    assert stats["stats"]["latency_ms"]["p99"] == 19.5 and stats["stats"]["drops"] == {"late": 3}
    assert stats["stage"] == "viewer-test"
    assert stats["viewer"]["frames_written"] == 1 and stats["viewer"]["last_seq"] == 7
    viewer.update_stats({"fps": 12.0})
    assert json.loads(_get(viewer, "/stats.json")[2])["stats"] == {"fps": 12.0}


def test_update_stats_rejects_what_json_cannot_hold(viewer):
    with pytest.raises(ValueError, match="JSON-able"):
        viewer.update_stats({"when": object()})
    with pytest.raises(ValueError, match="JSON-able"):
        viewer.update_stats({"fps": float("nan")})


def test_index_is_html_with_the_stream_and_stats(viewer):
    status, headers, body = _get(viewer, "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for path in ("/streams.json", "/frame.jpg", "/stats.json", "/shown"):
        assert f'"{path}"' in page, path
    assert "<title>Probe &lt;1&gt;</title>" in page
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere (no CDN)
    assert '<canvas id="chart"' in page and '<canvas id="drops"' in page


def test_unknown_path_is_404(viewer):
    assert _get(viewer, "/nope")[0] == 404


def test_write_rejects_a_non_bgr_image(viewer):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        viewer.write(np.zeros((4, 4), np.uint8), _frame(0))


def test_busy_port_is_a_one_line_sink_error():
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(SinkError) as err:
            ViewerSink(ViewerSpec(port=port), "viewer-busy")
        message = str(err.value)
        assert "\n" not in message
        assert f"127.0.0.1:{port}" in message and "viewer-busy" in message
    finally:
        busy.close()


def _viewer_threads(stage_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"viewer-{stage_id}")]


def test_close_with_open_and_stalled_clients_returns_promptly():
    sink = ViewerSink(ViewerSpec(port=0), "viewer-close")
    noise = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    sink.write(noise, _frame(0))
    reading = MjpegClient(sink)
    reading.next_part()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(TIMEOUT)
    stalled.connect(("127.0.0.1", sink.port))
    stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")  # then never reads
    idle = socket.create_connection(("127.0.0.1", sink.port), timeout=TIMEOUT)  # sends nothing
    try:
        for seq in range(1, 30):  # enough JPEG bytes that the stalled client's handler blocks
            sink.write(noise.copy(), _frame(seq))
            time.sleep(0.01)  # pacing: each frame is encoded and sent, not superseded
        t0 = time.monotonic()
        sink.close()
        assert time.monotonic() - t0 < 1.5  # well under the 5 s client timeout
        assert _viewer_threads("viewer-close") == []
        with pytest.raises((OSError, http.client.HTTPException, AssertionError)):
            for _ in range(100):
                reading.next_part()  # the stream ends
        sink.close()  # twice is fine
        with pytest.raises(RuntimeError, match="closed"):
            sink.write(noise, _frame(99))
    finally:
        reading.close()
        stalled.close()
        idle.close()


@pytest.mark.slow  # starts a Chromium process
def test_viewer_page_shows_legend_card_facts_notice_and_gate_in_headless_chromium(
    tmp_path,
) -> None:
    from stream.frame import Annotations
    from stream.render.explain import ModelExplainer
    from tests.viewing import browse, chromium

    chromium()
    explain = ModelExplainer("both")
    explain.note(
        Frame(
            "us",
            1,
            0,
            0,
            np.zeros((4, 4), np.uint8),
            parts={"mask": np.zeros((4, 4), np.uint8)},  # a segmenter's overlay: a mask legend
            annotations=Annotations(model="us-seg", labels=["background", "anechoic", "lesion"]),
            meta={
                "model_card": {
                    "notice": "Research use only, not for diagnosis",
                    "intended_use": "Demonstration <b>on phantoms</b>",
                    "training_data": "Synthetic phantom only",
                },
                "applicability": {
                    "score": 4.53,
                    "threshold": 1.473,
                    "applicable": False,
                    "method": "input_stats",
                },
            },
        )
    )
    sink = ViewerSink(ViewerSpec(port=0), "viewer-card")
    done = threading.Event()

    def live() -> None:  # headless Chromium's virtual time needs the stream to move
        seq = 0
        while not done.wait(0.05):
            seq += 1
            sink.write(_solid(seq % 200), _frame(seq))

    feeder = threading.Thread(target=live, daemon=True)
    try:
        sink.update_stats({"model": "us-seg", "fps": 30.0, "model_card": explain.live()})
        feeder.start()
        dom = browse(tmp_path, f"http://127.0.0.1:{sink.port}/", "--dump-dom").stdout
    finally:
        done.set()
        feeder.join(TIMEOUT)
        sink.close()
    assert '<aside id="model">' in dom, dom[-3000:]  # no longer hidden once the card arrived
    assert '<div id="notice">Research use only, not for diagnosis</div>' in dom
    assert "Model not applicable to this image (score 4.53 &gt; threshold 1.473)" in dom
    assert '<span class="swatch" style="background: rgb(0, 128, 255);"></span>anechoic' in dom
    assert '<span class="swatch" style="background: rgb(255, 255, 0);"></span>lesion' in dom
    assert "background</li>" not in dom  # the background label is not in the legend
    assert "Demonstration &lt;b&gt;on phantoms&lt;/b&gt;" in dom  # text, never markup
    assert '<dd id="training-data">Synthetic phantom only</dd>' in dom
    assert "<td>model_card" not in dom  # shown in the panel, not the stats table
    assert '<div id="confidence">confidence 0 - 1' in dom  # overlay "both": the heat-map's bar
    assert "linear-gradient(to right, rgb(128, 0, 0)" in dom


def _post(sink: ViewerSink, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=TIMEOUT)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _stream_frame(stream: str, seq: int, capture_ns: int) -> Frame:
    return Frame(stream, seq, capture_ns, 0, np.zeros((1, 1), np.uint8))


def test_each_stream_gets_its_own_slot_and_endpoints(viewer):
    viewer.write(_solid(30), _stream_frame("left", 1, 1_000_000_000))
    viewer.write(_solid(220), _stream_frame("right", 5, 2_000_000_000))
    viewer.write(_solid(40), _stream_frame("left", 2, 3_000_000_000))
    listed = json.loads(_get(viewer, "/streams.json")[2])["streams"]
    assert [(s["id"], s["frames"], s["last_seq"]) for s in listed] == [("left", 2, 2), ("right", 1, 5)]
    status, headers, body = _get(viewer, "/frame.jpg?stream=right")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and abs(int(np.median(image)) - 220) <= 3
    assert headers["X-Frame-Seq"] == "5" and headers["X-Capture-Ns"] == "2000000000"
    _, headers, _ = _get(viewer, "/frame.jpg")  # no stream: the first one
    assert headers["X-Frame-Seq"] == "2" and headers["X-Capture-Ns"] == "3000000000"
    assert _get(viewer, "/frame.jpg?stream=nope")[0] == 404
    stats = viewer.stats()["viewer"]
    assert stats["streams"] == ["left", "right"] and stats["last_capture_ns"] == 3_000_000_000


def test_frame_jpg_after_a_version_waits_for_a_newer_frame(viewer):
    viewer.write(_solid(10), _stream_frame("a", 1, 1))
    _, headers, _ = _get(viewer, "/frame.jpg?stream=a")
    version = headers["X-Frame-Version"]
    timer = threading.Timer(0.3, lambda: viewer.write(_solid(250), _stream_frame("a", 2, 2)))
    timer.start()
    try:
        t0 = time.monotonic()
        status, headers, _ = _get(viewer, f"/frame.jpg?stream=a&after={version}")
        assert status == 200 and headers["X-Frame-Seq"] == "2"
        assert time.monotonic() - t0 >= 0.25  # it waited for the frame written later
    finally:
        timer.join()


def test_shown_reports_become_display_latency_once_per_served_frame(viewer):
    capture_ns = time.time_ns() - 40_000_000  # captured 40 ms ago
    viewer.write(_solid(90), _stream_frame("a", 7, capture_ns))
    assert _get(viewer, "/frame.jpg?stream=a")[0] == 200  # served: now it may be reported
    shown_ms = capture_ns / 1e6 + 55.0
    report = json.dumps({"stream": "a", "seq": 7, "shown_ms": shown_ms}).encode()
    assert _post(viewer, "/shown", report) == 204
    assert _post(viewer, "/shown", report) == 400  # once per frame
    ((stream, latency),) = viewer.take_display_ms()
    assert stream == "a" and latency == pytest.approx(55.0, abs=0.01)
    assert viewer.take_display_ms() == []  # taken
    never_served = json.dumps({"stream": "a", "seq": 8, "shown_ms": shown_ms}).encode()
    assert _post(viewer, "/shown", never_served) == 400
    assert _post(viewer, "/shown", b"{not json") == 400
    assert _post(viewer, "/shown", json.dumps({"stream": "a", "seq": "7"}).encode()) == 400
    assert _post(viewer, "/shown", b"x" * 5000) == 413
    assert _post(viewer, "/nope", report) == 404
    counts = viewer.stats()["viewer"]["shown_reports"]
    assert counts == {
        "accepted": 1,
        "refused": {"unknown_frame": 2, "invalid": 2, "too_large": 1},
    }


def test_shown_refuses_a_time_before_the_capture_and_reports_past_the_rate():
    from stream.sinks.shown import ShownReports

    shown = ShownReports(max_per_s=5)
    shown.served("a", 1, 10_000_000_000)
    early = json.dumps({"stream": "a", "seq": 1, "shown_ms": 9_000.0}).encode()  # 1 s before
    assert shown.report(early) == "clock_skew"
    reasons = [shown.report(b"{}") for _ in range(20)]
    assert reasons.count("rate") >= 10 and "invalid" in reasons
    assert shown.take() == []


def test_mjpeg_of_a_named_stream_carries_only_that_stream(viewer):
    viewer.write(_solid(20), _stream_frame("a", 1, 111))
    viewer.write(_solid(230), _stream_frame("b", 1, 222))
    conn = http.client.HTTPConnection("127.0.0.1", viewer.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/stream.mjpg?stream=b")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.readline()  # the boundary
        headers = {}
        while (line := resp.readline().strip()) != b"":
            key, value = line.decode().split(":", 1)
            headers[key.lower()] = value.strip()
        image = cv2.imdecode(
            np.frombuffer(resp.read(int(headers["content-length"])), np.uint8), cv2.IMREAD_COLOR
        )
        assert headers["x-capture-ns"] == "222" and np.median(image) > 200
    finally:
        conn.close()
    assert _get(viewer, "/stream.mjpg?stream=c")[0] == 404
