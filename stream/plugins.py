"""Typed plug-in sections (`source:`, `sinks:`): pick the class by `type`, validate the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import ConfigError, parse_spec


@dataclass(frozen=True)
class Typed:
    """A `source:` or sink section parsed once: its `type`, its spec and the factory that opens it."""

    type: str
    spec: Any
    factory: Any

    def open(self, *args: Any, **kwargs: Any) -> Any:
        """The source or sink itself: `factory(spec, ...)`."""
        return self.factory(self.spec, *args, **kwargs)


def parse_typed(registry: dict[str, tuple[type, Any]], raw: Any, where: str, what: str) -> Typed:
    """The `Typed` section of a `{type: NAME, ...}` mapping, or raise `ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {raw!r:.60}")
    allowed = ", ".join(repr(t) for t in sorted(registry))
    if "type" not in raw:
        raise ConfigError(f"{where}.type: required (one of {allowed})")
    kind = raw["type"]
    if not isinstance(kind, str) or kind not in registry:
        raise ConfigError(f"{where}.type: unknown {what} type {kind!r:.40}; expected one of {allowed}")
    spec_cls, factory = registry[kind]
    rest = {k: v for k, v in raw.items() if k != "type"}
    return Typed(kind, parse_spec(spec_cls, rest, where), factory)


def parse_source(raw: Any, where: str) -> Typed:
    from .sources import SOURCE_TYPES

    return parse_typed(SOURCE_TYPES, raw, where, "source")


def parse_sink(raw: Any, where: str) -> Typed:
    from .sinks import SINK_TYPES

    return parse_typed(SINK_TYPES, raw, where, "sink")
