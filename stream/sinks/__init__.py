"""Sinks: where rendered frames go (browser viewer, video file, ...).

`open_sink(raw, where, stage_id)` builds one from its config mapping, chosen by `raw["type"]`.
"""

from __future__ import annotations

from typing import Any

from stream.sinks.base import Sink, SinkError
from stream.sinks.igtl import IgtlSink, IgtlSpec
from stream.sinks.recorder import RecorderSink, RecorderSpec
from stream.sinks.video import VideoSink, VideoSpec
from stream.sinks.viewer import ViewerSink, ViewerSpec
from stream.sinks.window import WindowSink, WindowSpec

SINK_TYPES: dict[str, tuple[type, type]] = {
    "viewer": (ViewerSpec, ViewerSink),
    "video": (VideoSpec, VideoSink),
    "recorder": (RecorderSpec, RecorderSink),
    "window": (WindowSpec, WindowSink),
    "igtl": (IgtlSpec, IgtlSink),
}


def open_sink(
    raw: dict[str, Any], where: str, stage_id: str, source_fps: float | None = None
) -> Sink:
    """Open the sink `raw` describes; `source_fps` is the stream's frame rate, if known.

    Raises ConfigError (naming `where.<key>`) for a bad config, SinkError if it cannot open.
    """
    from stream.plugins import parse_sink

    return parse_sink(raw, where).open(stage_id, source_fps=source_fps)


__all__ = [
    "SINK_TYPES",
    "IgtlSink",
    "IgtlSpec",
    "RecorderSink",
    "RecorderSpec",
    "Sink",
    "SinkError",
    "VideoSink",
    "VideoSpec",
    "ViewerSink",
    "ViewerSpec",
    "WindowSink",
    "WindowSpec",
    "open_sink",
]
