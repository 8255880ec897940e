"""The `medstream` command line: base install (no extras), help, version, errors as one line."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stream.cli import package_version
from tools.cli import TOOL_COMMANDS, build_full_parser, main

ROOT = Path(__file__).resolve().parent.parent

# makes the extras' modules unimportable, as in a base install
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"psutil", "matplotlib", "torch", "pydicom", "pyigtl", "PIL", "onnx", "tensorrt",
               "prometheus_client"}
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    from tools.cli import main
    sys.argv[0] = "medstream"
    try:
        rc = main()
    except SystemExit as e:
        rc = e.code
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("LEAKED" if leaked else "CLEAN", leaked, file=sys.stderr)
    sys.exit(rc)
    """
)


def _medstream_base(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`medstream ARGS` with psutil, matplotlib, torch, pydicom, ... unimportable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["--help"], ["models"], ["validate", "configs/ultrasound_seg.yaml"], ["soak", "--help"],
     ["bench", "--help"], ["profile", "--help"], ["fuzz", "--help"], ["top", "--help"],
     ["model", "add", "--help"], ["prometheus", "--help"]],
)
def test_commands_run_with_the_base_install(args: list[str]) -> None:
    r = _medstream_base(*args)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "CLEAN" in r.stderr, r.stderr  # no extra was even tried


@pytest.mark.slow
def test_a_tool_that_needs_an_extra_says_which_in_one_line() -> None:
    r = _medstream_base("soak", "--seconds", "30", "--warmup", "5")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith(("LEAKED", "CLEAN"))]
    assert lines == [
        "medstream soak needs psutil, which the base install does not include: "
        "pip install 'medstream[profile]'"
    ]
    r = _medstream_base("prometheus", "tcp://127.0.0.1:1", "--port", "0", "--max-seconds", "1")
    assert r.returncode == 2 and "pip install 'medstream[prometheus]'" in r.stderr, r.stderr


@pytest.mark.slow
def test_profile_run_without_matplotlib_fails_before_the_run(tmp_path: Path) -> None:
    r = _medstream_base(
        "profile", "configs/ultrasound_seg.yaml", "--run", "--duration", "30",
        "--out", str(tmp_path / "p"),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "needs matplotlib" in r.stderr and "medstream[profile]" in r.stderr
    assert "--no-plots" in r.stderr
    assert not (tmp_path / "p" / "run_report.json").exists()  # no run was started


def test_every_tool_subcommand_is_registered_lazily() -> None:
    parser = build_full_parser([])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(TOOL_COMMANDS) <= set(sub.choices)
    full = build_full_parser()
    full_sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in full_sub._choices_actions}
    for name, (_module, help_text) in TOOL_COMMANDS.items():
        assert helps[name] == help_text, f"{name}: TOOL_COMMANDS help differs from register()"


def _walk(parser: argparse.ArgumentParser, path: str):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{path} {name}")
        else:
            yield path, parser, action


def test_every_option_has_help_and_shows_its_default() -> None:
    missing, no_default = [], []
    for path, parser, action in _walk(build_full_parser(), "medstream"):
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if not (action.help or "").strip():
            missing.append(f"{path} {action.dest}")
            continue
        shown = parser._get_formatter()._get_help_string(action) or ""
        has_default = action.default not in (None, False, argparse.SUPPRESS)
        if has_default and "default" not in shown:
            no_default.append(f"{path} {action.dest}")
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"help without its default: {no_default}"


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["soak", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 600.0)" in out and "(default: 60.0)" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"medstream {package_version()}"
    assert package_version()[0].isdigit()


def test_models_lists_the_classical_methods(capsys: pytest.CaptureFixture[str]) -> None:
    from engines.classical import list_classical

    assert main(["models"]) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines() if ln}
    assert "us-seg" in rows and rows["us-seg"][1] == "bundled"
    for name in list_classical():
        assert rows[name][1] == "classical", rows.get(name)
    assert rows["classical-otsu"][2] == "segmentation"
    assert rows["classical-median"][2] == "denoising"


def test_keys_generate_into_an_unwritable_folder(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "afile").write_text("")
    assert main(["keys", "generate", "grab", "--dir", str(tmp_path / "afile" / "keys")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot make the key folder" in err[0], err


def test_fuzz_json_unwritable_is_refused_before_fuzzing(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "afile").write_text("")
    rc = main(["fuzz", "--seconds", "600", "--json", str(tmp_path / "afile" / "r.json")])
    assert rc == 2
    captured = capsys.readouterr()
    assert "decoder fuzz" not in captured.out  # refused at once, not after 600 s
    assert captured.err.startswith("medstream fuzz: cannot write the results file")


def test_prometheus_on_a_busy_port_is_one_line(capsys) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc = main(["prometheus", "tcp://127.0.0.1:1", "--port", str(port), "--max-seconds", "1"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0], err


def test_soak_refuses_seconds_not_above_the_warmup(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["soak", "--seconds", "60", "--warmup", "60"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medstream soak: --seconds (60) must be above --warmup")


def test_unexpected_errors_are_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import stream.cli

    def boom(args: argparse.Namespace) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr(stream.cli, "_cmd_models", boom)
    monkeypatch.delenv("MEDSTREAM_DEBUG", raising=False)
    assert main(["models"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "medstream models: unexpected error: ValueError: a bug "
        "(run with --debug or MEDSTREAM_DEBUG=1 for the traceback)"
    )
    with pytest.raises(ValueError):
        main(["--debug", "models"])
    monkeypatch.setenv("MEDSTREAM_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["models"])


@pytest.mark.slow
def test_profile_exits_non_zero_when_it_recorded_nothing(tmp_path: Path) -> None:
    # a config whose frame log nobody publishes: nothing is recorded in 1 s
    cfg = tmp_path / "idle.yaml"
    text = (ROOT / "configs" / "ultrasound_seg.yaml").read_text()
    cfg.write_text(text.replace("run_dir: runs/{name}", f"run_dir: {tmp_path}/run"))
    rc = main(["profile", str(cfg), "--duration", "1", "--no-plots", "--out", str(tmp_path / "p")])
    assert rc == 1
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["frames"]["analysed"] == 0


def test_evaluate_outputs_are_checked_before_the_evaluation(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "afile").write_text("")
    rc = main(["evaluate", "--out-md", str(tmp_path / "afile" / "e.md")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("'afile' is a file, not a folder".replace(
        "'afile'", repr(str(tmp_path / "afile")))), err


def test_writable_output_leaves_nothing_behind(tmp_path: Path) -> None:
    from tools.errors import OutputError, writable_folder, writable_output

    target = tmp_path / "new" / "r.json"
    assert writable_output(target, "x") == target
    assert (tmp_path / "new").is_dir() and not target.exists()
    writable_folder(tmp_path / "out", "x")
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "f").write_text("keep")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        writable_output(tmp_path / "f" / "r.json", "x")
    assert (tmp_path / "f").read_text() == "keep"


def test_environment_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import stream.cli

    def denied(args: argparse.Namespace) -> int:
        raise PermissionError(13, "Permission denied", "out/x.json")

    monkeypatch.setattr(stream.cli, "_cmd_models", denied)
    monkeypatch.delenv("MEDSTREAM_DEBUG", raising=False)
    assert main(["models"]) == 1
    assert capsys.readouterr().err.strip() == (
        "medstream models: error: [Errno 13] Permission denied: 'out/x.json'"
    )


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "ten"])
@pytest.mark.parametrize(
    "command",
    [
        ["run", "configs/ultrasound_seg.yaml", "--duration"],
        ["profile", "x.yaml", "--duration"],
        ["soak", "--seconds"],
        ["top", "tcp://127.0.0.1:1", "--interval"],
        ["fuzz", "--seconds"],
    ],
)
def test_a_duration_that_is_not_a_positive_number_is_refused(
    command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --duration nan` ran for ever, -1 stopped before the first frame (exit 3), `top
    --interval 0` redrew without a pause and `fuzz --seconds nan` passed after 0 cases."""
    with pytest.raises(SystemExit) as stopped:
        main([*command, value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {command[-1]}: expected a" in err and repr(value) in err, err


@pytest.mark.parametrize(
    "command, value",
    [
        (["prometheus", "x.yaml", "--port"], "99999"),  # was 'unexpected error: OverflowError'
        (["prometheus", "x.yaml", "--port"], "-1"),
        (["prometheus", "x.yaml", "--max-seconds"], "nan"),  # served for no time, exit 0
        (["prometheus", "x.yaml", "--max-seconds"], "-1"),
        (["prometheus", "x.yaml", "--linger"], "-5"),
        (["soak", "--max-growth"], "nan"),  # a growth check that could never fail
        (["soak", "--warmup"], "-1"),
        (["profile", "x.msrec", "--pass-percentile"], "150"),  # ValueError after the analysis
        (["profile", "x.msrec", "--pass-percentile"], "0"),
        (["profile", "x.msrec", "--warmup"], "-3"),
        (["top", "tcp://127.0.0.1:1", "--count"], "-2"),
        (["fuzz", "--socket-cases"], "-3"),  # '0: skip', but -3 sent one case
        (["engine", "build", "us-seg", "--max-batch"], "0"),
        (["model", "add", "m.onnx", "--size"], "0"),
        (["model", "add", "m.onnx", "--size"], "two"),
    ],
)
def test_numbers_out_of_range_are_refused_before_anything_runs(
    command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*command, value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {command[-1]}: expected a" in err and repr(value) in err, err


def test_numbers_in_range_are_taken() -> None:
    parse = build_full_parser().parse_args
    args = parse(["prometheus", "x.yaml", "--port", "0", "--max-seconds", "0", "--linger", "0"])
    assert (args.port, args.max_seconds, args.linger) == (0, 0.0, 0.0)
    args = parse(["profile", "x.msrec", "--pass-percentile", "100", "--warmup", "0"])
    assert (args.pass_percentile, args.warmup) == (100.0, 0)
    assert parse(["fuzz", "--socket-cases", "0"]).socket_cases == 0


def test_a_positive_duration_is_taken() -> None:
    args = build_full_parser().parse_args(["run", "configs/ultrasound_seg.yaml", "--duration", "2.5"])
    assert args.duration == 2.5


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_binary_file_given_as_the_config_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A video or a model where the config goes was an 'unexpected error: UnicodeDecodeError'."""
    video = tmp_path / "scan.mp4"
    video.write_bytes(bytes(range(128, 256)) * 4)
    assert main([command, str(video)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"medstream: config error: {video}: not a text file (a pipeline config is YAML)"]


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"\x97" * 64, "not a medstream recording"), (b"MSTREC\r\n" + b"\xff" * 64, "recording format")],
)
def test_profile_of_a_damaged_recording_is_one_line(
    content: bytes, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "run.msrec"
    rec.write_bytes(content)
    assert main(["profile", str(rec), "--no-plots", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"medstream profile: {rec}: {why}"), err


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--seeds", "5-1", "runs backwards"),
        ("--endo-seeds", "3000-2999", "runs backwards"),
        ("--frames-per-seed", "-3", "expected a whole number >= 1"),
        ("--threads", "0", "expected a whole number >= 1"),
        ("--real-every", "x", "expected a whole number"),
    ],
)
def test_evaluate_refuses_an_empty_sample_set_before_it_starts(
    option: str, value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--seeds 5-1` was a ZeroDivisionError after loading; `--frames-per-seed -3` wrote a
    table of nothing."""
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", option, value])
    assert stopped.value.code == 2
    assert why in capsys.readouterr().err


def test_ctrl_c_while_the_runtime_is_imported_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tools.cli` imports the runtime only inside `main`, so a Ctrl-C in the first 0.2 s (the
    imports) is the same one line as later (it was a KeyboardInterrupt traceback)."""
    code = "import sys, tools.cli; print(sorted(m for m in sys.modules if m.startswith('stream')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    # the runtime's package and its one-module Ctrl-C note, nothing heavier
    assert out.stdout.strip() == "['stream', 'stream.interrupts']", out.stdout + out.stderr

    def interrupted(_commands: list[str] | None = None) -> argparse.ArgumentParser:
        raise KeyboardInterrupt

    monkeypatch.setattr("tools.cli.build_full_parser", interrupted)
    assert main(["run", "configs/ultrasound_seg.yaml"]) == 130
    assert main([]) == 130
    assert capsys.readouterr().err == "medstream run: interrupted\nmedstream: interrupted\n"

    def wrapped(_args: argparse.Namespace) -> int:
        """A Ctrl-C while a dataclass is made (an import): Python 3.11 raises `RuntimeError:
        Error calling __set_name__ on 'Field' instance ...` from the KeyboardInterrupt."""
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'host'") from e

    monkeypatch.undo()
    monkeypatch.setattr("stream.cli._cmd_models", wrapped)
    assert main(["models"]) == 130  # was 'unexpected error: RuntimeError: Error calling ...'
    assert capsys.readouterr().err == "medstream models: interrupted\n"

    def plain(_args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr("stream.cli._cmd_models", plain)
    monkeypatch.delenv("MEDSTREAM_DEBUG", raising=False)
    assert main(["models"]) == 1
    assert "unexpected error: RuntimeError: a bug" in capsys.readouterr().err
