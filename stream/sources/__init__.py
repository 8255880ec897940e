"""Frame sources for the grab stage, and the registry that opens one from its config section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stream.sources.base import Capture, Source, SourceError
from stream.sources.phantom import PhantomSource, PhantomSpec
from stream.spec import ConfigError, parse_spec

# type name -> (spec dataclass parsed from the rest of the section, factory taking that spec)
SOURCE_TYPES: dict[str, tuple[type, Callable[[Any], Source]]] = {
    "phantom": (PhantomSpec, PhantomSource),
}


def open_source(raw: dict, where: str) -> Source:
    """Open the source described by config section `raw` (`type:` plus that type's keys).

    `where` is the section's dotted path (e.g. "stages[0].source"), used in every error.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r:.60}")
    allowed = ", ".join(sorted(SOURCE_TYPES))
    if "type" not in raw:
        raise ConfigError(f"{where}.type: required; allowed types: {allowed}")
    kind = raw["type"]
    if not isinstance(kind, str) or kind not in SOURCE_TYPES:
        raise ConfigError(
            f"{where}.type: unknown source type {kind!r:.60}; allowed types: {allowed}"
        )
    spec_cls, factory = SOURCE_TYPES[kind]
    spec = parse_spec(spec_cls, {k: v for k, v in raw.items() if k != "type"}, where)
    return factory(spec)


__all__ = ["SOURCE_TYPES", "Capture", "Source", "SourceError", "open_source"]
