"""The `medstream` console script: the runtime commands of `stream.cli` plus the tools.

`stream` must not import `tools`, so the tools' subcommands are added here. Each entry of
TOOL_COMMANDS names the module whose `register(subparsers)` adds that subcommand (with `func`
set); the module is imported only when its subcommand runs (or asks for its help), so the base
install runs every command whose tool needs no extra, and a tool that needs one says which in
one line instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from stream.interrupts import note_interrupts
from tools.errors import ToolError
from tools.extras import missing_extra_of, missing_message

# subcommand -> (module under tools/ with register(subparsers), one-line help for `--help`)
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "fuzz": ("tools.fuzz", "fuzz the wire decoder (and a live Receiver over tcp)"),
    "soak": ("tools.soak", "run a pipeline long and check stages for memory/fd/thread growth"),
    "engine": ("tools.engine_cli", "build TensorRT engines, show the engine cache"),
    "evaluate": ("tools.evaluate", "traditional vs CNN vs hybrid on held-out phantoms"),
    "top": ("tools.top", "live view of every stage (fps, latency, drops, misses)"),
    "profile": ("tools.profiling.cli", "profile a pipeline: tables, plots, Perfetto timeline"),
    "prometheus": ("tools.prometheus", "serve a pipeline's stats at /metrics for Prometheus"),
    "bench": ("tools.bench.cli", "benchmark links and pipelines against their floors"),
    "gpu-check": (
        "tools.gpu_check",
        "run every GPU path this host can (CUDA kernel, PyTorch, ONNX Runtime, TensorRT)",
    ),
}

DEBUG_ENV = "MEDSTREAM_DEBUG"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (top-level options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_full_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the tools' subcommands: those in `commands` (default: all) registered
    by their modules (imported here), the others as one-line entries for `--help`."""
    from stream.cli import build_parser

    parser = build_parser()
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an unexpected error (or set {DEBUG_ENV}=1)",
    )
    sub = _subparsers(parser)
    wanted = set(TOOL_COMMANDS) if commands is None else set(commands)
    for name, (module, help_text) in TOOL_COMMANDS.items():
        if name in wanted:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _missing_extra(error: ImportError, command: str | None, debug: bool) -> int:
    """One line naming the extra a command needs (exit 2); anything else is raised again."""
    module = missing_extra_of(error)
    if module is None or debug:
        raise error
    print(missing_message(str(command), module), file=sys.stderr)
    return 2


def _interrupted(error: BaseException) -> bool:
    """Whether a Ctrl-C caused `error` (a KeyboardInterrupt among its causes)."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    note_interrupts()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _chosen_command(argv)
    try:
        return _run(argv, command)
    except (KeyboardInterrupt, Exception) as e:  # also one wrapped in another error (Python
        if not _interrupted(e):  # 3.11 makes it a RuntimeError in a dataclass's __set_name__)
            raise
        print(
            f"medstream {command}: interrupted" if command else "medstream: interrupted",
            file=sys.stderr,
        )
        return 130


def _run(argv: list[str], command: str | None) -> int:
    from stream.cli import run_parsed

    debug = _debug(argv)
    try:
        parser = build_full_parser([command] if command in TOOL_COMMANDS else [])
    except ImportError as e:
        return _missing_extra(e, command, debug)
    args = parser.parse_args(argv)
    try:
        return run_parsed(args)
    except ToolError as e:  # a missing extra, an output that cannot be written, ...
        text = str(e)
        line = text if text.startswith("medstream ") else f"medstream {command}: {text}"
        print(line, file=sys.stderr)
        return 2
    except ImportError as e:
        return _missing_extra(e, command, debug)
    except OSError as e:  # files, folders, ports: the environment, not a bug
        if debug:
            raise
        print(f"medstream {command}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if debug or _interrupted(e):
            raise
            raise
        print(
            f"medstream {command}: unexpected error: {type(e).__name__}: {e} "
            f"(run with --debug or {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
