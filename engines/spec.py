"""Typed config sections: dataclasses parsed from YAML with errors that name the key.

A leaf module (standard library only): `engines` and `stream` both import it, and `engines`
imports nothing from `stream`.

A section is a dataclass; `parse_spec(Cls, raw, "stages[1].source")` checks every key against
the fields' type hints (int, float, str, bool, Literal[...], X | None, list[X], nested specs) and
optional bounds in `field(metadata={"min": .., "max": ..})`, and raises `ConfigError` with the
dotted path, what was expected and what was found. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """A config value that is missing, unknown or of the wrong type; the message names the key."""


def bounded(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "") -> Any:
    """A dataclass field with a default, numeric bounds and a one-line description."""
    return dataclasses.field(default=default, metadata={"min": lo, "max": hi, "doc": doc})


def section(factory: Any, doc: str) -> Any:
    """A dataclass field holding a nested section (or list/mapping), built by `factory`."""
    return dataclasses.field(default_factory=factory, metadata={"doc": doc})


def required(doc: str) -> Any:
    """A dataclass field with no default: the key must be present."""
    return dataclasses.field(metadata={"doc": doc})


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _convert(arg, value, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r:.60}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r:.60}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r:.60}")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r:.60}")
        return dict(value)
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r:.60}")
        return None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return parse_spec(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r:.60}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r:.60}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r:.60}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r:.60}")
        return value
    raise TypeError(f"unsupported spec type {tp!r} at {where}")


def parse_spec(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, validating every key (see module docstring)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r:.60}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown and not where:  # the top level: name the key itself, not an empty path
        raise ConfigError(
            f"{unknown[0]}: unknown top-level key; allowed keys: {', '.join(sorted(fields))}"
        )
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}" if where else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key_where}: required ({_type_name(hints[name])})")
            continue
        value = _convert(hints[name], raw[name], key_where)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(
                    f"{key_where}: expected a value in [{lo if lo is not None else '-inf'}, "
                    f"{hi if hi is not None else 'inf'}], got {value!r}"
                )
        values[name] = value
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(where)
    return obj


def spec_fields_doc(cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) rows for the config reference docs."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:  # set by code, not a config key
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("doc", "")))
    return rows
