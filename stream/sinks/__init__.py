"""Sinks: where rendered frames go (browser viewer, video file, ...).

`open_sink(raw, where, stage_id)` builds one from its config mapping, chosen by `raw["type"]`.
"""

from __future__ import annotations

from typing import Any

from stream.sinks.base import Sink, SinkError
from stream.sinks.video import VideoSink, VideoSpec
from stream.sinks.viewer import ViewerSink, ViewerSpec
from stream.spec import ConfigError, parse_spec

SINK_TYPES: dict[str, tuple[type, type]] = {
    "viewer": (ViewerSpec, ViewerSink),
    "video": (VideoSpec, VideoSink),
}


def open_sink(
    raw: dict[str, Any], where: str, stage_id: str, source_fps: float | None = None
) -> Sink:
    """Open the sink `raw` describes; `source_fps` is the stream's frame rate, if known.

    Raises ConfigError (naming `where.<key>`) for a bad config, SinkError if it cannot open.
    """
    allowed = ", ".join(repr(t) for t in sorted(SINK_TYPES))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {raw!r:.60}")
    if "type" not in raw:
        raise ConfigError(f"{where}.type: required (one of {allowed})")
    kind = raw["type"]
    if not isinstance(kind, str) or kind not in SINK_TYPES:
        raise ConfigError(
            f"{where}.type: unknown sink type {kind!r:.40}; expected one of {allowed}"
        )
    spec_cls, sink_cls = SINK_TYPES[kind]
    spec = parse_spec(spec_cls, {k: v for k, v in raw.items() if k != "type"}, where)
    return sink_cls(spec, stage_id, source_fps=source_fps)


__all__ = [
    "SINK_TYPES",
    "Sink",
    "SinkError",
    "VideoSink",
    "VideoSpec",
    "ViewerSink",
    "ViewerSpec",
    "open_sink",
]
