"""The `medstream` console script: the runtime commands of `stream.cli` plus the tools.

`stream` must not import `tools`, so the tools' subcommands are added here: each module listed
in TOOL_COMMANDS has `register(subparsers)`, which adds its subcommand(s) with `func` set.
"""

from __future__ import annotations

import importlib
import sys

from stream.cli import build_parser, run_parsed

# modules under tools/ that add subcommands (profile, top, bench, evaluate, ...)
TOOL_COMMANDS: list[str] = [
    "tools.fuzz",
    "tools.soak",
    "tools.engine_cli",
    "tools.evaluate",
    "tools.top",
    "tools.profiling.cli",
    "tools.prometheus",
    "tools.bench.cli",
    "tools.gpu_check",
]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in TOOL_COMMANDS:
        importlib.import_module(name).register(sub)
    return run_parsed(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
