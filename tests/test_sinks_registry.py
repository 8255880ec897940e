"""open_sink: config errors name the key; known types open and close."""

from __future__ import annotations

import pytest

from stream.sinks import SINK_TYPES, VideoSink, ViewerSink, open_sink
from stream.spec import ConfigError


def test_registry_holds_the_viewer_and_video_sinks():
    assert set(SINK_TYPES) == {"viewer", "video", "recorder", "window", "igtl"}


def test_unknown_type_names_the_key_and_the_allowed_types():
    with pytest.raises(ConfigError) as err:
        open_sink({"type": "hologram"}, "stages[2].sinks[0]", "render")
    message = str(err.value)
    assert message.startswith("stages[2].sinks[0].type:")
    assert "'hologram'" in message and "'video'" in message and "'viewer'" in message


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({}, r"^s\.type: required"),
        ("viewer", r"^s: expected a mapping"),
        ({"type": 3}, r"^s\.type: unknown sink type 3"),
        ({"type": "viewer", "prot": 1}, r"^s: unknown key 'prot'"),
        ({"type": "viewer", "port": 70000}, r"^s\.port: expected a value in \[0, 65535\]"),
        ({"type": "viewer", "jpeg_quality": 0}, r"^s\.jpeg_quality"),
        ({"type": "viewer", "host": ""}, r"^s\.host"),
        ({"type": "video"}, r"^s\.path: required"),
        ({"type": "video", "path": "x.mp4", "fourcc": "h264x"}, r"^s\.fourcc: expected 4"),
        ({"type": "video", "path": "x.mp4", "fps": 0}, r"^s\.fps"),
        ({"type": "video", "path": "x.mp4", "queue": 0}, r"^s\.queue"),
    ],
)
def test_bad_configs_are_config_errors_naming_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        open_sink(raw, "s", "render")


def test_open_sink_opens_each_type(tmp_path):
    viewer = open_sink({"type": "viewer", "port": 0, "title": "t"}, "s", "render")
    try:
        assert isinstance(viewer, ViewerSink) and viewer.port > 0 and viewer.spec.title == "t"
    finally:
        viewer.close()
    path = tmp_path / "v.mp4"
    video = open_sink({"type": "video", "path": str(path)}, "s", "render", source_fps=50.0)
    try:
        assert isinstance(video, VideoSink) and video.fps == 50.0
    finally:
        video.close()


def test_the_sink_protocol_has_every_method_the_render_stage_calls():
    import inspect

    from stream.sinks.base import Sink

    members = {
        name
        for name, value in vars(Sink).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }
    # render.py calls write, update_stats, drops and close on every sink (pending is optional)
    assert members == {"write", "update_stats", "drops", "close"}
    for _spec_cls, sink_cls in SINK_TYPES.values():
        for name in members:
            assert callable(getattr(sink_cls, name, None)), f"{sink_cls.__name__}.{name}"
        params = list(inspect.signature(sink_cls.close).parameters)
        assert params == ["self"], f"{sink_cls.__name__}.close{params}"
