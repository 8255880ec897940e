"""The pipeline config as a JSON Schema (draft 2020-12), built from the spec dataclasses that
validate it at load, so the two cannot disagree: `medstream config-schema [--out FILE]`.

Each section is one entry of `$defs` whose `title` is its heading in docs/config.md (generated
from this schema by tools/config_reference.py). Stages are a `oneOf` told apart by `kind`,
sources and sinks a `oneOf` told apart by `type`. What the schema cannot say (links that exist,
one corner per HUD piece, a `roi:` rectangle's x0 < x1, endpoints) `medstream validate` still
checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
DOC_FILE = Path(__file__).resolve().parent.parent / "docs" / "config.schema.json"


def _spec_doc(cls: type) -> str:
    """The first paragraph of a spec class's docstring, on one line."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


class _Defs:
    """The `$defs` of the schema: each spec class named, titled and built in the order added."""

    def __init__(self) -> None:
        self.entries: list[tuple[type, str, str, tuple[str, str] | None]] = []

    def add(self, cls: type, name: str, title: str, tag: tuple[str, str] | None = None) -> dict[str, Any]:
        """Name `cls` `$defs/name`; `tag` (key, value): a required key fixed to that value."""
        self.entries.append((cls, name, title, tag))
        return {"$ref": f"#/$defs/{name}"}

    def ref(self, cls: type) -> dict[str, Any]:
        for known, name, _title, _tag in self.entries:
            if known is cls:
                return {"$ref": f"#/$defs/{name}"}
        raise TypeError(f"{cls.__name__}: nested spec with no $defs name")

    def build(self) -> dict[str, dict[str, Any]]:
        from .spec import spec_json_schema

        defs = {}
        for cls, name, title, tag in self.entries:
            body = spec_json_schema(cls, self.ref)
            if tag is not None:
                key, value = tag
                prop = body["properties"].pop(key, {})
                prop.pop("default", None)
                doc = prop.get("description", f"selects the keys of this {name.split('-')[0]}")
                body["properties"] = {key: {"const": value, "description": doc}, **body["properties"]}
                body["required"] = [key, *[k for k in body.get("required", []) if k != key]]
                body["additionalProperties"] = body.pop("additionalProperties")  # last, as elsewhere
            defs[name] = {"title": title, "description": _spec_doc(cls), **body}
        return defs


def roi_schema() -> list[dict[str, Any]]:
    """The shapes of a grab stage's `roi:` (stream.roi.setting checks the rest: x0 < x1, ...)."""
    from .roi.setting import NAMED

    point = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2}
    rectangle = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 4, "maxItems": 4}
    return [{"enum": list(NAMED)}, rectangle, {"type": "array", "items": point, "minItems": 3}]


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline config file; `$defs` in the order of docs/config.md."""
    from engines.api import EngineSpec

    from .config import STAGE_KINDS as KINDS
    from .config import BatchSpec, LayoutSpec, PipelineConfig, RestartSpec
    from .security import SecuritySpec
    from .sinks import SINK_TYPES
    from .sources import SOURCE_TYPES
    from .sources.phantom import RealismSpec
    from .spec import spec_json_schema
    from .tracking import TrackerSpec
    from .transport import LinkSpec

    d = _Defs()
    d.add(RestartSpec, "restart", "`restart:`")
    d.add(SecuritySpec, "security", "`security:` (see docs/security.md)")
    d.add(LinkSpec, "link", "`links.<name>:`")
    stages = [d.add(KINDS["grab"], "stage-grab", "Stage `kind: grab`", ("kind", "grab"))]
    stages.append(d.add(KINDS["infer"], "stage-infer", "Stage `kind: infer`", ("kind", "infer")))
    d.add(EngineSpec, "engine", "`engine:` (infer)")
    d.add(BatchSpec, "batch", "`batch:` (infer)")
    d.add(TrackerSpec, "tracker", "`tracker:` (infer)")
    stages.append(d.add(KINDS["render"], "stage-render", "Stage `kind: render`", ("kind", "render")))
    d.add(LayoutSpec, "layout", "`layout:` (render)")
    assert len(stages) == len(KINDS), "a stage kind with no $defs entry"
    sources = []
    for name, (cls, _factory) in sorted(SOURCE_TYPES.items()):
        title = f"Source `type: {name}` (grab `source:`)"
        sources.append(d.add(cls, f"source-{name}", title, ("type", name)))
        if name == "phantom":
            d.add(RealismSpec, "phantom-realism", "Phantom `realism:` (source `type: phantom`)")
    sinks = [
        d.add(cls, f"sink-{name}", f"Sink `type: {name}` (render `sinks:`)", ("type", name))
        for name, (cls, _factory) in sorted(SINK_TYPES.items())
    ]
    defs = d.build()
    grab, render = defs["stage-grab"], defs["stage-render"]
    doc = grab["properties"]["source"]["description"]
    grab["properties"]["source"] = {"description": doc, "oneOf": sources}
    grab["required"].append("source")  # an empty source has no `type:`, refused at load
    render["properties"]["sinks"]["items"] = {"oneOf": sinks}
    render["properties"]["per_stream_sinks"]["additionalProperties"] = {
        "type": "array",
        "items": {"oneOf": sinks},
    }
    for kind in KINDS:  # what _parse_stage accepts (\w: letters and digits, and '_')
        defs[f"stage-{kind}"]["properties"]["id"]["pattern"] = r"^[-.\w]+$"
    grab["properties"]["roi"] |= {"anyOf": roi_schema()}

    top = spec_json_schema(PipelineConfig, d.ref)
    props = top["properties"]
    for key in ("links", "stages"):
        props[key].pop("default")
    props["links"] |= {"minProperties": 1, "additionalProperties": d.ref(LinkSpec)}
    props["stages"] |= {"minItems": 1, "items": {"oneOf": stages}}
    top["required"] = ["links", "stages"]
    return {
        "$schema": SCHEMA_URI,
        "title": "medstream pipeline config",
        "description": _spec_doc(PipelineConfig),
        **top,
        "$defs": defs,
    }


def schema_text() -> str:
    """The schema as the JSON text written to docs/config.schema.json."""
    return json.dumps(config_schema(), indent=2) + "\n"


def _cmd_config_schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.out in (None, "-"):
        sys.stdout.write(text)
        return 0
    try:
        Path(args.out).write_text(text)
    except OSError as e:
        print(f"medstream: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `medstream config-schema` to the CLI."""
    p = sub.add_parser(
        "config-schema",
        help="print the JSON Schema of pipeline configs (editor completion; docs/config.md)",
    )
    p.add_argument("--out", default=None, help="write it to this file instead of stdout")
    p.set_defaults(func=_cmd_config_schema)
