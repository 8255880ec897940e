"""OpenIGTLink geometry: the IMAGE matrix follows the frame's patient orientation (Slicer labels
the edges as the viewer does), and a spacing the source flags as suspect is withheld, flagged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl", reason="pip install 'medstream[igtl]'")

from stream.render.orientation import OrientationAnnotator  # noqa: E402
from stream.sinks.igtl import IgtlSink, IgtlSpec  # noqa: E402

from .helpers import wait_until  # noqa: E402
from .test_sink_igtl import TIMEOUT, receive, us_frame  # noqa: E402


@pytest.fixture
def igtl() -> Iterator[tuple[IgtlSink, Any]]:
    """A sink on a free port and a pyigtl client connected to it."""
    sink = IgtlSink(IgtlSpec(port=0, send_timeout_s=0.5), "render")
    client = pyigtl.OpenIGTLinkClient("127.0.0.1", sink.port)
    try:
        assert wait_until(lambda: sink.clients > 0, TIMEOUT), "the client did not connect"
        yield sink, client
    finally:
        client.stop()
        sink.close()

LPS_LETTERS = [("L", "R"), ("P", "A"), ("H", "F")]  # +x, +y, +z in LPS and their opposites


def letter(vector: np.ndarray) -> str:
    """The patient direction a vector points to most (LPS)."""
    axis = int(np.argmax(np.abs(vector)))
    return LPS_LETTERS[axis][0 if vector[axis] > 0 else 1]


def viewer_edges(orientation: tuple[str, str]) -> dict[str, str]:
    """Which letter the viewer draws at the right and the bottom edge."""
    lay = OrientationAnnotator().layout(400, 600, orientation)
    right = max(lay.labels, key=lambda lab: lab[1][0])[0]
    bottom = max(lay.labels, key=lambda lab: lab[1][1])[0]
    return {"right": right, "bottom": bottom}


@pytest.mark.parametrize("orientation", [("R", "A"), ("L", "P"), ("A", "F"), ("P", "H"), ("R", "F")])
def test_slicer_gets_the_same_edges_as_the_viewer(
    igtl: tuple[IgtlSink, Any], orientation: tuple[str, str]
) -> None:
    sink, client = igtl
    frame = us_frame(3)
    frame.meta["patient_orientation"] = list(orientation)
    image = receive(sink, client, [frame], "render_image")
    mask = client.wait_for_message("render_mask", timeout=TIMEOUT)
    edges = viewer_edges(orientation)
    for msg in (image, mask):
        m = np.asarray(msg.ijk_to_world_matrix)
        assert msg.world_coordinate_system == "lps"
        assert letter(m[:3, 0]) == edges["right"]  # the column index grows to the right edge
        assert letter(m[:3, 1]) == edges["bottom"]  # the row index grows to the bottom edge
        assert np.linalg.norm(m[:3, 0]) == pytest.approx(0.2, abs=1e-6)  # spacing kept
        assert np.linalg.norm(m[:3, 1]) == pytest.approx(0.3, abs=1e-6)
        assert abs(float(np.dot(m[:3, 0], m[:3, 1]))) < 1e-6


def test_a_suspect_spacing_is_withheld_and_flagged(igtl: tuple[IgtlSink, Any]) -> None:
    sink, client = igtl
    frame = us_frame(4)
    frame.meta["pixel_spacing_suspect"] = "ultrasound region outside the image"
    image = receive(sink, client, [frame], "render_image")
    info = client.wait_for_message("render_info", timeout=TIMEOUT)
    m = np.asarray(image.ijk_to_world_matrix)
    assert np.linalg.norm(m[:3, 0]) == pytest.approx(1.0) and np.linalg.norm(m[:3, 1]) == pytest.approx(1.0)
    assert image.metadata["pixel_spacing"] == "unverified"
    meta = json.loads(info.string)
    assert meta["pixel_spacing_mm"] is None
    assert meta["pixel_spacing_unverified_mm"] == [0.3, 0.2]
    assert meta["pixel_spacing_suspect"] == "ultrasound region outside the image"


def test_a_trusted_spacing_is_sent_as_known(igtl: tuple[IgtlSink, Any]) -> None:
    sink, client = igtl
    image = receive(sink, client, [us_frame(5)], "render_image")
    assert image.metadata["pixel_spacing"] == "known"
    assert np.linalg.norm(np.asarray(image.ijk_to_world_matrix)[:3, 0]) == pytest.approx(0.2, abs=1e-6)
