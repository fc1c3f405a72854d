"""The command's parser, read back: every option is documented, and documented defaults are real.

The commands themselves run as subprocesses in tests/integration/test_cli.py.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from dacbench_remote.cli import build_parser, main


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands by name (none for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands(parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()
             ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(argv prefix, parser) of the top level and of every command and action below it."""
    parser = parser or build_parser()
    found = [(path, parser)]
    for name, child in subparsers(parser).items():
        found += commands(child, (*path, name))
    return found


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


def help_text(capsys, argv: tuple[str, ...], monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "250")  # one line per option: no wrapping to match across
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


COMMANDS = commands()


def test_the_parser_has_the_commands_the_readme_documents():
    names = {" ".join(path) for path, _ in COMMANDS if path}
    assert {"run", "list", "pull", "build", "inspect", "ps", "cleanup", "config", "status",
            "report", "cache ls", "cache verify", "cache prune", "sweep run", "sweep status",
            "sweep report", "sweep cancel"} <= names


def test_top_level_status_and_report_are_the_sweep_actions():
    for action in ("status", "report"):
        top = build_parser().parse_args([action, "runs/x"])
        nested = build_parser().parse_args(["sweep", action, "runs/x"])
        assert vars(top) == vars(nested)


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=lambda v: " ".join(v) or "top"
                         if isinstance(v, tuple) else "")
def test_help_lists_every_option_with_an_explanation(path, parser, capsys, monkeypatch):
    text = help_text(capsys, path, monkeypatch)
    for action in options(parser):
        shown = action.option_strings or [action.metavar or action.dest]
        for name in shown:
            assert re.search(rf"(^|[\s,\[]){re.escape(name)}(?=[\s,\]]|$)", text, re.MULTILINE), \
                f"{name} not in help"
        assert action.help and action.help != argparse.SUPPRESS, \
            f"{' '.join(path)} {shown[0]} has no help text"
    for name in subparsers(parser):
        line = re.search(rf"^\s+{re.escape(name)}\s+(.*)$", text, re.MULTILINE)
        assert line, f"command {name} is not listed in the help of {' '.join(path) or 'top'}"
        assert line.group(1).strip() == " ".join(_help_of(parser, name).split())


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    raise AssertionError(f"{name} is not a command")


# What "(default X)" in a help text means for a default value of each type.
def _shown(default) -> str:
    if isinstance(default, Path):
        return f"./{default}" if not default.is_absolute() else str(default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


DOCUMENTED = [(path, action) for path, parser in COMMANDS for action in options(parser)
              if action.help and "default" in action.help]


@pytest.mark.parametrize(("path", "action"), DOCUMENTED,
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else v.dest)
def test_documented_defaults_are_the_actual_defaults(path, action):
    stated = re.search(r"\(default[: ]\s*([^);]+)", action.help) or re.search(
        r"default: ([^);]+)", action.help)
    assert stated, f"{action.help!r}: say the default as '(default X)' or '(default: ...)'"
    value = stated.group(1).strip()
    if action.default is None or isinstance(action.default, bool):
        # "default: the last", "default: cores", "default: build; --no-build forbids it", ...:
        # prose for a value decided later (None) or for a switch's state (True/False).
        expected_prose = {None: None, True: "build", False: None}[action.default]
        if expected_prose is not None:
            assert value.startswith(expected_prose), action.help
        return
    assert value == _shown(action.default), (
        f"{' '.join(path)} {action.option_strings}: help says default {value!r}, the parser "
        f"uses {action.default!r}")


def test_run_parses_to_the_documented_defaults():
    """The same defaults, through parse_args as the command sees them."""
    args = build_parser().parse_args(["run", "Luby"])
    assert (args.episodes, args.seed, args.agent, args.out, args.build) == (
        3, 0, "random", Path("results"), True)
    assert args.startup_timeout == 60.0 and args.runtime is None
    assert build_parser().parse_args(["run", "Luby", "--seed", "none"]).seed is None
    assert build_parser().parse_args(["build", "x.def", "-o", "x.sif"]).builder == "auto"


def test_repeat_of_a_run_with_an_agent_object_is_one_clear_error(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({
        "run_id": "r1", "benchmark": "Luby", "agent": "my_experiment:PolicyAgent",
        "agent_rebuildable": False, "runtime": "local", "base_seed": 0, "episode": 0, "seed": 0,
        "return": -3.0, "length": 3}) + "\n")
    assert main(["run", "--repeat", str(results), "--out", str(tmp_path / "again")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dacbench-remote: error: run r1 in ") and "Traceback" not in err
    assert "'my_experiment:PolicyAgent'" in err and "module:factory" in err
    assert not (tmp_path / "again").exists()


def test_every_command_names_a_handler_that_exists():
    """Handlers are imported when their command runs (cli/commands.py, cli/sweep_commands.py):
    each one a command names is there, under that name."""
    import importlib

    targets = set()
    for path, parser in commands():
        handler = parser.get_default("handler")
        if handler is None:
            continue
        target = getattr(handler, "target", (handler.__module__, handler.__name__))
        module = importlib.import_module(target[0])
        assert callable(getattr(module, target[1])), (path, target)
        targets.add(target)
    assert ("dacbench_remote.cli.commands", "cmd_run") in targets
    assert ("dacbench_remote.cli.sweep_commands", "cmd_sweep_run") in targets


LIGHT_START = """
import contextlib, io, sys
from dacbench_remote.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(sys.argv[1:])
print(" ".join(m for m in sys.modules if m.startswith(("gymnasium", "requests", "Pyro5",
      "dacbench_remote.host.runner", "dacbench_remote.images.resolve"))))
"""


@pytest.mark.parametrize("argv", [["config"], ["sweep", "status", "SWEEP"],
                                  ["report", "SWEEP", "--no-plot"]])
def test_config_status_and_report_start_without_the_runner_gymnasium_or_the_image_tools(
        argv, tmp_path):
    """(numpy may come: pyarrow, which writes results.parquet, imports it.)"""
    import subprocess
    import sys

    from dacbench_remote.sweeps import SweepDir, Trial

    layout = SweepDir(tmp_path / "sweep")
    layout.path.mkdir()
    layout.write_trials([Trial("gymnasium:CartPole-v1", "random", 0, 1)])
    argv = [str(layout.path) if a == "SWEEP" else a for a in argv]
    done = subprocess.run([sys.executable, "-c", LIGHT_START, *argv], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.split() == []
