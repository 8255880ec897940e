"""Typed JSON documents (model cards, stats snapshots): msgspec Structs, errors with the key path.

A leaf module (msgspec only): `typed(raw, Cls, where, Error)` checks decoded JSON against the
Struct `Cls` (types, bounds in `Meta`, cross-field rules in `__post_init__`; unknown keys are
left out of the Struct, never an error) and raises `Error("where: a.b[0]: what is wrong")`.
"""

from __future__ import annotations

import re
import types
from contextlib import suppress
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)  # msgspec's errors
_STEP = re.compile(r"(?:^|\.)([^.\[]+)|\[(\d+)\]")


def hint_at(tp: Any, path: str) -> Any:
    """The type at `path` (`a.b[0]`) in `tp` (Struct or dataclass fields, list items, mapping
    values); Any where the path leaves the types."""
    for name, _index in _STEP.findall(path):
        if get_origin(tp) in (Union, types.UnionType):
            tp = next((a for a in get_args(tp) if a is not type(None)), Any)
        if name and isinstance(tp, type) and hasattr(tp, "__annotations__"):
            tp = get_type_hints(tp).get(name, Any)
        elif get_origin(tp) in (dict, list) and (name or get_origin(tp) is list):
            tp = get_args(tp)[-1]
        else:
            return Any
    return tp


def value_at(doc: Any, path: str) -> Any:
    """The item at `path` (`a.b[0]`) in decoded `doc`."""
    for name, index in _STEP.findall(path):
        doc = doc[name] if name else doc[int(index)]
    return doc


def choices(tp: Any) -> tuple[Any, ...]:
    """The values of Literal `tp` (or of the Literal in union `tp`), else ()."""
    if get_origin(tp) in (Union, types.UnionType):
        tp = next((t for t in get_args(tp) if get_origin(t) is Literal), None)
    return get_args(tp) if get_origin(tp) is Literal else ()


def _replaced(doc: Any, trail: list[Any], value: Any) -> Any:
    """A copy of `doc` with the item at `trail` (keys and indices) replaced by `value`."""
    if not trail:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[trail[0]] = _replaced(doc[trail[0]], trail[1:], value)
    return copy


def named_path(raw: Any, cls: type, e: msgspec.ValidationError, path: str) -> str:
    """`path` with each `[...]` (some value of a mapping) replaced by `.KEY`, the first key whose
    value is refused: msgspec checks in order, so a prefix of the mapping fails the same way
    exactly when it holds that key (bisected)."""
    done, trail, doc = "", [], raw
    while "[...]" in path:
        head, path = path.split("[...]", 1)
        for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", head):
            trail.append(name or int(index))
            doc = doc[trail[-1]]
        items, lo, hi = list(doc.items()), 1, len(doc)
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                msgspec.convert(_replaced(raw, trail, dict(items[:mid])), cls)
                lo = mid + 1
            except msgspec.ValidationError as again:
                lo, hi = (lo, mid) if str(again) == str(e) else (mid + 1, hi)
        trail.append(items[lo - 1][0])
        doc = doc[trail[-1]]
        done += f"{head}.{trail[-1]!s:.40}"
    return done + path


def typed(raw: Any, cls: type[S], where: str, error: type[ValueError]) -> S:
    """`raw` (decoded JSON) as Struct `cls`, else `error("where: a.b: expected int, got str")`."""
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as e:
        m = AT.match(str(e))
        assert m is not None  # the pattern matches any text
        what, path = m["what"], m["path"] or ""
        with suppress(LookupError, TypeError, AttributeError):  # a path this walk does not know
            path = named_path(raw, cls, e, path)
        path = path.lstrip(".")
        if missing := re.fullmatch(r"Object missing required field `(.*)`", what):
            what = f"missing key {missing[1]!r}"
        elif what.startswith("Invalid enum value ") and choices(hint_at(cls, path)):
            options = ", ".join(str(c) for c in choices(hint_at(cls, path)))
            what = f"expected one of {options}, got {what[len('Invalid enum value ') :]}"
        what = what.replace("`", "")
        what = what[:1].lower() + what[1:] if what.startswith("Expected") else what
        raise error(": ".join(p for p in (where, path, what) if p)) from None
