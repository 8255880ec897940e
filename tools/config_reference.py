"""Write docs/config.md, the config reference, from the spec dataclasses themselves.

    python -m tools.config_reference            # rewrite docs/config.md
    python -m tools.config_reference --check    # exit 1 if docs/config.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engines.api import EngineSpec
from stream.config import GrabSpec, InferSpec, PipelineConfig, RenderSpec, RestartSpec
from stream.security import SecuritySpec
from stream.sinks import SINK_TYPES
from stream.sources import SOURCE_TYPES
from stream.sources.phantom import RealismSpec
from stream.spec import spec_fields_doc
from stream.transport import LinkSpec

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"

INTRO = """# Config reference

A pipeline is one YAML file: top-level keys, `links:` (a mapping of link name -> link) and
`stages:` (a list). Every key is checked at load; an unknown key, a wrong type or a value out of
range stops `medstream run` (and `medstream validate`) with an error naming the key, e.g.
`stages[1].engine.backend: expected one of 'auto', 'onnxruntime', ..., got 'tpu'`.
`{name}` and `{run_dir}` expand in `run_dir`, `stats_endpoint` and link endpoints.
Beyond the keys, `medstream validate` checks what `medstream run` checks before it starts a
stage: endpoints (ports, ipc path length), links no stage uses, model names and files, CURVE key
files, source files, and whether another run holds the run dir (docs/reliability.md, "Starting a
run"). Each problem is one line that starts with its dotted key.

This page is generated from the code by `python -m tools.config_reference`; a test fails when it
is out of date.
"""


def table(title: str, cls: type, skip: tuple[str, ...] = ()) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, doc in spec_fields_doc(cls):
        if key in skip:
            continue
        rows.append(f"| `{key}` | {typ} | `{default}` | {doc} |")
    return f"## {title}\n\n" + "\n".join(rows) + "\n"


def render() -> str:
    parts = [
        INTRO,
        table("Top level", PipelineConfig, skip=("links", "stages", "source_file")),
        table("`restart:`", RestartSpec),
        table("`security:` (see docs/security.md)", SecuritySpec),
        table("`links.<name>:`", LinkSpec),
        table("Stage `kind: grab`", GrabSpec),
        table("Stage `kind: infer`", InferSpec),
        table("`engine:` (infer)", EngineSpec),
        table("Stage `kind: render`", RenderSpec),
    ]
    for name, (spec_cls, _factory) in sorted(SOURCE_TYPES.items()):
        parts.append(table(f"Source `type: {name}` (grab `source:`)", spec_cls))
        if name == "phantom":
            parts.append(table("Phantom `realism:` (source `type: phantom`)", RealismSpec))
    for name, (spec_cls, _factory) in sorted(SINK_TYPES.items()):
        parts.append(table(f"Sink `type: {name}` (render `sinks:`)", spec_cls))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that docs/config.md is current")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m tools.config_reference", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
