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
from collections.abc import Callable
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
        others = [a for a in get_args(tp) if a is not type(None)]
        if value is not None and len(others) == 1:  # `X | None` given a value: X's own error
            return _convert(others[0], value, where)
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


def json_schema_of(tp: Any, ref: Callable[[type], dict[str, Any]]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one field type; `ref(cls)` gives a nested spec's."""
    origin = get_origin(tp)
    if origin is Literal:
        values = list(get_args(tp))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_schema_of(a, ref) for a in get_args(tp)]}
    if origin is list:
        return {"type": "array", "items": json_schema_of(get_args(tp)[0], ref)}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if tp is Any:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return ref(tp)
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in names:
        return {"type": names[tp]}
    raise TypeError(f"unsupported spec type {tp!r}")


def _json_default(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # type: ignore[arg-type]


def spec_json_schema(cls: type, ref: Callable[[type], dict[str, Any]]) -> dict[str, Any]:
    """The JSON Schema of the mapping `parse_spec(cls, ...)` accepts: every init field with its
    type, bounds (`minimum` / `maximum`), default and doc (`description`); no other keys."""
    hints = get_type_hints(cls)
    props: dict[str, Any] = {}
    required_keys = []
    for f in dataclasses.fields(cls):
        if not f.init:  # set by code, not a config key
            continue
        prop = json_schema_of(hints[f.name], ref)
        if f.metadata.get("min") is not None:
            prop["minimum"] = f.metadata["min"]
        if f.metadata.get("max") is not None:
            prop["maximum"] = f.metadata["max"]
        if f.default is not dataclasses.MISSING:
            prop["default"] = _json_default(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = _json_default(f.default_factory())
        else:
            required_keys.append(f.name)
        if f.metadata.get("doc"):
            prop["description"] = f.metadata["doc"]
        props[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required_keys:
        schema["required"] = required_keys
    schema["additionalProperties"] = False
    return schema
