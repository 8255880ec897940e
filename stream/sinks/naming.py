"""Names for the report: a sink by its config `type:` and its drop reasons in words."""

from __future__ import annotations

# drop reasons the sinks count (stream/sinks/*.py) -> what the text report says
DROP_REASON_TEXT: dict[str, str] = {
    "no_client": "no client connected",
    "superseded": "replaced by a newer frame before it was sent",
    "client_skipped": "a slow client skipped it",
    "pack_error": "could not be encoded",
    "encode_error": "could not be encoded",
    "sink_overflow": "writer queue full",
    "writer_error": "write failed",
    "bad_size": "frame size changed",
    "window_closed": "window closed",
    "replaced": "the window was slower than the stream",
}


def drop_reason_text(reason: str) -> str:
    """A sink's drop reason in words (an unknown one as itself, underscores as spaces)."""
    return DROP_REASON_TEXT.get(reason, reason.replace("_", " "))


def sink_kind(sink: object) -> str:
    """The config `type:` of a sink object (`igtl`, `video`, ...); its class name if unknown."""
    from stream.sinks import SINK_TYPES

    for name, (_spec, cls) in SINK_TYPES.items():
        if type(sink) is cls:
            return name
    return type(sink).__name__


def unique_label(kind: str, taken: set[str] | dict[str, object]) -> str:
    """`kind`, or `kind#2`, `kind#3`, ... when a sink of the same type is already named."""
    if kind not in taken:
        return kind
    n = 2
    while f"{kind}#{n}" in taken:
        n += 1
    return f"{kind}#{n}"
