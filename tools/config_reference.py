"""Write docs/config.md (the config reference) and docs/config.schema.json from the JSON
Schema of the config (stream.config_schema), so the page and the schema never disagree.

    python -m tools.config_reference            # rewrite both files
    python -m tools.config_reference --check    # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stream.config_schema import DOC_FILE as SCHEMA_FILE
from stream.config_schema import schema_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"

INTRO = """# Config reference

A pipeline is one YAML file: top-level keys, `links:` (a mapping of link name -> link) and
`stages:` (a list). Every key is checked at load; an unknown key, a wrong type or a value out of
range stops `medstream run` (and `medstream validate`) with an error naming the key, e.g.
`stages[1].engine.backend: expected one of 'auto', 'onnxruntime', ..., got 'tpu'`.
`{name}` and `{run_dir}` expand in `run_dir`, `stats_endpoint` and link endpoints.
Beyond the keys, `medstream validate` checks what `medstream run` checks before it starts a
stage: endpoints (ports, ipc path length), links no stage uses, infer stages whose output leads
back to their own input (a loop), model names and files, CURVE key files, source files, and
whether another run holds the run dir (docs/reliability.md, "Starting a run"). Each problem is one
line that starts with its dotted key. A stage that waits for more consumers (`wait_for_consumers`)
than the stages of the config that read its output is not an error (an outside consumer may be
meant) but a `note:` line from `validate` and a warning when `run` starts, as such a stage
waits `wait_timeout_s` (20 s by default) for them before its first frame.

The same keys as a JSON Schema (draft 2020-12): `docs/config.schema.json`, or
`medstream config-schema --out FILE`. Editors use it for completion and checks as you type: with
the YAML language server (VS Code's YAML extension, Neovim, Helix, ...) put this first line in a
config (the path relative to the config, or an absolute path or URL):

```yaml
# yaml-language-server: $schema=../docs/config.schema.json
```

The schema checks keys, types, allowed values, bounds and required keys; what needs more than
one key or the machine (links that exist, one corner per HUD piece, a `roi:` rectangle's
x0 < x1, endpoints, files) only `medstream validate` checks.

This page and the schema are generated from the code by `python -m tools.config_reference`
(tables below: one per `$defs` entry of the schema, in its order); a test fails when either is
out of date.
"""


def type_text(prop: dict[str, Any]) -> str:
    """A property's type in words, with its bounds, from its schema."""
    text = base_type_text(prop)
    if "pattern" in prop:
        text += f" matching `{prop['pattern']}`"
    lo, hi = prop.get("minimum"), prop.get("maximum")
    if lo is None and hi is None:
        return text
    return f"{text}, in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def base_type_text(prop: dict[str, Any]) -> str:
    if "const" in prop:
        return repr(prop["const"])
    if "enum" in prop:
        return "one of " + ", ".join(repr(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(base_type_text(p) for p in prop["anyOf"])
    if "oneOf" in prop:
        return "a mapping with `type:` (one of the `type:` sections below)"
    if "$ref" in prop:
        return "a mapping (its section below)"
    kind = prop.get("type")
    if kind == "array":
        return f"a list of {plural(prop)}"
    words = {"string": "a string", "integer": "an integer", "number": "a number"}
    words |= {"boolean": "true or false", "null": "null", "object": "a mapping"}
    return words.get(str(kind), "anything")


def plural(array: dict[str, Any]) -> str:
    """What a list holds, e.g. `4 numbers >= 0`, `3 or more lists of 2 numbers`."""
    n, most = array.get("minItems"), array.get("maxItems")
    count = f"{n} " if n is not None and n == most else f"{n} or more " if n else ""
    items = array.get("items", {})
    if "oneOf" in items:
        return f"{count}mappings with `type:` (below)"
    if items.get("type") == "array":
        return f"{count}lists of {plural(items)}"
    words = {"string": "strings", "integer": "integers", "number": "numbers"}
    words |= {"boolean": "trues or falses", "object": "mappings"}
    text = words.get(str(items.get("type")), type_text(items))
    if items.get("minimum") is not None and items.get("maximum") is None:
        text += f" >= {items['minimum']}"
    return count + text


def default_text(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "(required)"
    if "$ref" in prop:
        return "(see below)"
    return "`" + json.dumps(prop.get("default")) + "`"


def table(title: str, schema: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    required = set(schema.get("required", ()))
    for key, prop in schema["properties"].items():
        if key in skip:
            continue
        doc = prop.get("description", "")
        rows.append(f"| `{key}` | {type_text(prop)} | {default_text(prop, key in required)} | {doc} |")
    about = f"{schema['description']}\n\n" if schema.get("description") else ""
    return f"## {title}\n\n{about}" + "\n".join(rows) + "\n"


def render(schema: dict[str, Any]) -> str:
    parts = [INTRO, table("Top level", schema, skip=("links", "stages"))]
    parts += [table(sub["title"], sub) for sub in schema["$defs"].values()]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that both files are current")
    args = p.parse_args(argv)
    schema = schema_text()
    files = {SCHEMA_FILE: schema, DOC: render(json.loads(schema))}
    if args.check:
        stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
        for path in stale:
            print(f"{path} is out of date: run python -m tools.config_reference", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
