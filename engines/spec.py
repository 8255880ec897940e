"""Typed config sections: dataclasses parsed from YAML by msgspec, errors that name the key.

A leaf module of `engines` (msgspec only): `engines` and `stream` both import it, and `engines`
imports nothing from `stream`.

A section is a dataclass; `parse_spec(Cls, raw, "stages[1].source")` converts the mapping with
`msgspec.convert` (types: int, float, str, bool, Literal[...], X | None, list[X], dict, nested
specs; missing required keys), then checks what msgspec leaves alone: unknown keys (errors, never
ignored), bounds in `field(metadata={"min": .., "max": ..})` (see `bounded`) and each spec's
`validate(where)`. Every `ConfigError` names the dotted path, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec

from engines.schema import AT, choices, hint_at, named_path, value_at

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


_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _message(e: msgspec.ValidationError, cls: type, raw: Any, where: str) -> str:
    """msgspec's error as `where.a.b[0]: expected an integer, got 'x'`."""
    m = AT.match(str(e))
    assert m is not None  # the pattern matches any text
    what, path = m["what"], m["path"] or ""
    try:
        path = named_path(raw, cls, e, path)  # `[...]` (a mapping's value): the key itself
        value: Any = value_at(raw, path)
    except (LookupError, TypeError, AttributeError, ValueError):
        value = None
    if m := re.fullmatch(r"Expected `(.*)`, got `(.*)`", what):
        names = m[1].split(" | ")
        if value is not None and len(names) > 1 and "null" in names:  # `X | None`: X's error
            names.remove("null")
        what = f"expected {' or '.join(_NAMES.get(n, n) for n in names)}, got {value!r:.60}"
    elif what.startswith("Invalid enum value"):
        options = ", ".join(repr(a) for a in choices(hint_at(cls, path)))
        what = f"expected one of {options}, got {value!r:.60}"
    elif m := re.fullmatch(r"Object missing required field `(.*)`", what):
        path += f".{m[1]}"
        kind = str(getattr(hint_at(cls, path), "__name__", ""))
        what = f"required ({_NAMES.get(kind, 'a ' + kind)})" if kind else "required"
    else:
        what = what.replace("`", "")
        what = what[:1].lower() + what[1:]
    key = f"{where}{path}" if where else path.lstrip(".")
    return f"{key}: {what}"


def _check(obj: Any, raw: Any, where: str) -> None:
    """What msgspec leaves to us: unknown keys, bounds and each spec's `validate(where)`."""
    if isinstance(obj, list):  # `obj` is `raw` converted: the same shape
        for i, (item, raw_item) in enumerate(zip(obj, raw, strict=True)):
            _check(item, raw_item, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            _check(item, raw[key], f"{where}.{key}" if where else str(key))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: f for f in dataclasses.fields(obj) if f.init}
        unknown = sorted(set(raw) - set(fields))
        if unknown:  # the top level: name the key itself, not an empty path
            head = (
                f"{where}: unknown key {unknown[0]!r}"
                if where
                else f"{unknown[0]}: unknown top-level key"
            )
            raise ConfigError(f"{head}; allowed keys: {', '.join(sorted(fields))}")
        for name in raw:
            key_where = f"{where}.{name}" if where else name
            value, bounds = getattr(obj, name), fields[name].metadata
            lo, hi = bounds.get("min"), bounds.get("max")  # None for a bool: never out of bounds
            if isinstance(value, (int, float)) and not (
                (lo is None or value >= lo) and (hi is None or value <= hi)
            ):
                lo, hi = "-inf" if lo is None else lo, "inf" if hi is None else hi
                raise ConfigError(f"{key_where}: expected a value in [{lo}, {hi}], got {value!r}")
            _check(value, raw[name], key_where)
        check = getattr(obj, "validate", None)
        if check is not None:
            check(where)


def _null_sections(cls: Any, raw: Any) -> Any:
    """`raw` without the keys that are null where `cls` wants a section: an empty section
    (`security:` with nothing under it) means its defaults, as before msgspec."""
    if not isinstance(raw, dict) or not dataclasses.is_dataclass(cls):
        return raw
    hints = get_type_hints(cls)
    out = {}
    for key, value in raw.items():
        tp = hints.get(key) if isinstance(key, str) else None
        if dataclasses.is_dataclass(tp):
            if value is None:
                continue
            value = _null_sections(tp, value)
        out[key] = value
    return out


def parse_spec(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, validating every key (see module docstring)."""
    raw = _null_sections(cls, {} if raw is None else raw)
    try:
        obj = msgspec.convert(raw, cls)
    except msgspec.ValidationError as e:
        raise ConfigError(_message(e, cls, raw, where)) from None
    _check(obj, raw, where)
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
        for bound, key in (("min", "minimum"), ("max", "maximum")):
            if f.metadata.get(bound) is not None:
                prop[key] = f.metadata[bound]
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
