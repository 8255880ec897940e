"""The `medstream` command line."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from .config import GrabSpec, InferSpec, StageSpec
from .keys import KeyFileError
from .spec import ConfigError
from .stages.base import StageRuntime
from .transport import LinkError


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config_file
    from .exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_NO_FRAMES
    from .preflight import preflight, report_path_problem
    from .report import format_report, write_report
    from .supervisor import StartError, Supervisor

    cfg = load_config_file(args.config)
    stages = [s for s in args.stages.split(",") if s] if args.stages else None
    sup = Supervisor(cfg, args.config, duration_s=args.duration, stages=stages)
    report_path = Path(args.report or Path(cfg.run_dir) / "report.json")
    problems = preflight(cfg, list(sup.children))
    problem = report_path_problem(report_path)
    if problems or problem:  # nothing has started yet
        for line in problems + ([problem] if problem else []):
            print(f"medstream: config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        report = sup.run()
    except StartError as e:
        print(f"medstream: cannot start: {e}", file=sys.stderr)
        return e.status
    print(format_report(report), flush=True)  # printed first: a failing write loses nothing
    try:
        write_report(report, report_path)
    except OSError as e:
        print(f"medstream: cannot write the report to {report_path}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report written to {report_path}")
    if sup.exit_code:
        why = report.get("exit", "")
        if sup.exit_code == EXIT_NO_FRAMES:
            why = f"no frame was delivered (stopped: {why})"
        print(f"medstream: run failed (exit {sup.exit_code}): {why}", file=sys.stderr)
    return sup.exit_code


def _cmd_stage(args: argparse.Namespace) -> int:
    import os

    import zmq

    from .config import load_config_file
    from .exit_codes import EXIT_SETUP
    from .preflight import preflight
    from .security import startup_notice
    from .stages.base import stage_logger
    from .supervisor import become_supervised_child

    become_supervised_child()
    # started by the supervisor: its frozen copy, checked at start; else the user's YAML
    cfg = load_config_file(args.config)
    spec = cfg.stage(args.id)
    log = stage_logger(spec.id)
    if not os.environ.get("MEDSTREAM_SUPERVISOR_PID"):  # the supervisor said it already
        problems = preflight(cfg, [spec.id], supervisor=False, stats=args.stats_endpoint != "")
        for line in problems:
            log.error("%s", line)
        if problems:
            return EXIT_SETUP
        startup_notice(cfg, log)
    try:
        rt = StageRuntime(cfg, spec, stats_endpoint=args.stats_endpoint)
    except (KeyFileError, LinkError, zmq.ZMQError, OSError) as e:
        log.error("cannot start: %s", e)
        return EXIT_SETUP
    rt.install_signal_handlers()
    try:
        return _run_stage(rt, spec)
    except (LinkError, KeyFileError) as e:  # a peer's public key is read when its link opens
        rt.log.error("%s", e)
        return EXIT_SETUP  # its setup failed: the supervisor does not restart the stage
    finally:
        rt.close()


def _run_stage(rt: StageRuntime, spec: StageSpec) -> int:
    if isinstance(spec, GrabSpec):
        from .stages.grab import run_grab

        return run_grab(rt, spec)
    if isinstance(spec, InferSpec):
        from .stages.infer import run_infer

        return run_infer(rt, spec)
    from .stages.render import run_render

    return run_render(rt, spec)


def _cmd_validate(args: argparse.Namespace) -> int:
    """What `run` checks before it starts a stage: the config, then `preflight` (models, keys,
    files), then what is busy now (another run in the run dir, endpoints in use)."""
    from .config import consumer_notes, load_config_file
    from .exit_codes import EXIT_BUSY, EXIT_CONFIG
    from .preflight import busy_endpoints, preflight
    from .run_lock import run_dir_holder

    cfg = load_config_file(args.config)
    ids = [s.id for s in cfg.stages]
    problems = preflight(cfg, ids)
    for line in problems:
        print(f"medstream: config error: {line}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    holder = run_dir_holder(cfg.run_dir)
    busy = ([holder] if holder else []) or busy_endpoints(cfg, ids)
    for line in busy:
        print(f"medstream: busy: {line}", file=sys.stderr)
    if busy:
        return EXIT_BUSY
    for line in consumer_notes(cfg):
        print(f"medstream: note: {line}", file=sys.stderr)
    print(f"{args.config}: ok ({len(cfg.stages)} stages: {', '.join(ids)})")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from engines import list_models
    from engines.classical import ClassicalPipeline, list_classical
    from engines.registry import ModelError, check_runnable, list_user_models, resolve_model

    print(
        f"{'model':<23}{'source':<11}{'task':<16}{'input':<10}{'held-out metric':<32}"
        "ms/frame (1 thread)"
    )
    models = [("bundled", n) for n in list_models()] + [("user", n) for n in list_user_models()]
    for source, name in models:
        try:
            ref = resolve_model(name)
            check_runnable(ref)  # e.g. a detection layout the postprocess cannot read
            card = ref.card
        except ModelError as e:  # a hand-edited user card: say so, list the rest
            print(f"{name:<23}{source:<11}(unusable: {e})")
            continue
        metrics = card.raw.get("metrics", {})
        metric = next((f"{k} {v}" for k, v in metrics.items() if isinstance(v, float)), "")
        latency = card.raw.get("cost", {}).get("latency_ms", {})
        speed = latency.get("pipeline_median_ms", "") or latency.get("engine_median_ms", "")
        size = f"{card.input.width}x{card.input.height}"
        print(f"{name:<23}{source:<11}{card.task:<16}{size:<10}{metric:<32}{speed}")
    for name in list_classical():
        task = ClassicalPipeline(name).task
        print(f"{name:<23}{'classical':<11}{task:<16}{'any':<10}(OpenCV, no model file)")
    print("chain models with '+' (classical-median+us-seg); `medstream evaluate` compares them")
    return 0


def package_version() -> str:
    """The installed package's version (its metadata), else the source tree's constant."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        return version("medstream")
    except PackageNotFoundError:
        return __version__


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, unless the text names it already or
    there is none to show (None, or an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or isinstance(action, argparse._SubParsersAction)
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def _expect(ok: bool, what: str, text: str) -> None:
    if not ok:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    _expect(math.isfinite(value), "a finite number", text)
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def above_zero(text: str) -> float:
    """An argparse type: a finite number above 0 (a duration, a rate); nan, inf, 0 and negative
    values are refused with a one-line error instead of a run that never stops or never starts."""
    _expect((value := _finite(text)) > 0, "a finite number above 0", text)
    return value


def zero_or_more(text: str) -> float:
    """An argparse type: a finite number >= 0 (a time where 0 means none, or never)."""
    _expect((value := _finite(text)) >= 0, "a finite number >= 0", text)
    return value


def percentile(text: str) -> float:
    """An argparse type: a percentile, above 0 and at most 100."""
    _expect(0 < (value := _finite(text)) <= 100, "a percentile in (0, 100]", text)
    return value


def at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count of frames, threads, runs)."""
    _expect((value := _whole(text)) >= 1, "a whole number >= 1", text)
    return value


def count_or_zero(text: str) -> int:
    """An argparse type: a whole number >= 0 (a count where 0 means none, or no limit)."""
    _expect((value := _whole(text)) >= 0, "a whole number >= 0", text)
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    _expect(0 <= (value := _whole(text)) <= 65535, "a port in 0-65535", text)
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults (subcommands inherit it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="medstream", description=__doc__)
    p.add_argument("--version", action="version", version=f"medstream {package_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from .exit_codes import RUN_EPILOG

    run = sub.add_parser(
        "run",
        help="start and supervise a whole pipeline graph",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", help="pipeline YAML (see configs/)")
    run.add_argument(
        "--duration",
        type=above_zero,
        default=None,
        help="stop S seconds after the start (start-up, such as loading a model, included)",
    )
    run.add_argument("--report", default=None, help="write the JSON run report here")
    run.add_argument(
        "--stages",
        default=None,
        help="comma-separated stage ids to run here; the others run on other hosts "
        "(medstream stage) and push their stats to this supervisor",
    )
    run.set_defaults(func=_cmd_run)

    stage = sub.add_parser("stage", help="run one stage of a graph (for graphs across hosts)")
    stage.add_argument("config", help="pipeline YAML the graph was started from")
    stage.add_argument("id", help="stage id in the config")
    stage.add_argument(
        "--stats-endpoint",
        default=None,
        help="push stats here instead of the config's (empty: none)",
    )
    stage.set_defaults(func=_cmd_stage)

    val = sub.add_parser("validate", help="check a config and exit")
    val.add_argument("config", help="pipeline YAML to check")
    val.set_defaults(func=_cmd_validate)

    models = sub.add_parser(
        "models", help="list the bundled models, the user models and the classical methods `model:` accepts"
    )
    models.set_defaults(func=_cmd_models)

    from .config_schema import register as register_config_schema
    from .keys_cli import register as register_keys
    from .model_cli import register as register_model

    register_keys(sub)
    register_config_schema(sub)
    register_model(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser().parse_args(argv))


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed command; config errors become one line on stderr and exit code 2."""
    try:
        return args.func(args)
    except (ConfigError, KeyFileError) as e:
        kind = "config" if isinstance(e, ConfigError) else "key"
        print(f"medstream: {kind} error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
