"""The layout is the container boundary: the rules of tests/import_rules.py hold for the package,
and they catch a violation put into a copy of it on purpose."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dacbench_remote
from tests.import_rules import check, cycles, graph, imports

PACKAGE_DIR = Path(dacbench_remote.__file__).resolve().parent


def test_the_package_keeps_the_layout_rules():
    assert check(PACKAGE_DIR) == []


def test_the_rules_read_imports_inside_functions_and_skip_type_checking_ones():
    found = imports(PACKAGE_DIR)
    # The reporting module imports matplotlib inside a function (an optional dependency) ...
    assert any(i.importer == "dacbench_remote.sweeps.reporting" and i.target == "matplotlib"
               and i.in_function for i in found)
    # ... and the root's TYPE_CHECKING imports of host/ never run, so they are no edge.
    assert any(i.importer == "dacbench_remote" and i.type_checking for i in found)
    assert not any(target.startswith("dacbench_remote.host")
                   for target in graph(found)["dacbench_remote"])


# A line put into one module of a copy of the package, and what the check must then report.
VIOLATIONS = {
    "server imports the runner": (
        "server/envs.py", "from ..host import runner\n",
        ("image side reaches the host side:", "server.envs -> host.runner")),
    "a root module the server uses imports runtimes/": (
        "_sys/procfs.py", "from ..runtimes import base\n",
        ("image side reaches the host side:", "_sys.procfs -> runtimes.base")),
    "wire imports requests in a function": (
        "wire/channel.py", "def _late():\n    import requests\n",
        ("wire.channel:", "imports requests, but it runs inside images")),
    "server imports experiments": (
        "server/envs.py", "from ..experiments import dag\n",
        ("image side reaches the host side:", "server.envs -> experiments.dag")),
    "images imports experiments": (
        "images/sif.py", "from ..experiments import dag\n",
        ("images/ reaches experiments.dag:", "images.sif -> experiments.dag")),
    "images imports runtimes": (
        "images/sif.py", "from ..runtimes import options\n",
        ("images/ reaches runtimes.options:", "images.sif -> runtimes.options")),
    "an import circle through a function": (
        "_sys/files.py", "def _late():\n    from . import sockets\n",
        ("import circle among _sys.files, _sys.sockets",)),
    "the trainer reaches the image cache": (
        "rl/job.py", "from ..images import resolve\n",
        ("agent side reaches images.resolve:", "rl.job -> images.resolve")),
    "the trainer imports requests": (
        "rl/trainer.py", "import requests\n",
        ("rl.trainer:", "imports requests, but it runs inside agent images")),
    "a stdlib import inside a function": (
        "host/agents.py", "def _late():\n    import json\n",
        ("host.agents:", "imports json inside a function")),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_the_rules_catch_a_violation_put_in_on_purpose(case, tmp_path):
    module, line, expected = VIOLATIONS[case]
    copy = tmp_path / "dacbench_remote"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "packaged"))
    target = copy / module
    target.write_text(target.read_text() + "\n\n" + line)
    problems = check(copy)
    assert any(all(part in problem for part in expected) for problem in problems), problems


def test_a_circle_is_found_however_long():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_importing_the_package_loads_neither_side():
    """Images import the package root before the server: it must stay light."""
    code = ("import sys, dacbench_remote; "
            "print(' '.join(m for m in sys.modules if m.startswith(('dacbench_remote', "
            "'gymnasium', 'Pyro5', 'numpy', 'requests'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert sorted(loaded) == ["dacbench_remote", "dacbench_remote._sys", "dacbench_remote._sys.lazy",
                              "dacbench_remote.errors"]


def test_every_public_name_resolves_to_its_defining_module():
    for name in dacbench_remote.__all__:
        value = getattr(dacbench_remote, name)
        if name != "__version__":
            assert value.__module__.startswith("dacbench_remote."), name
    assert set(dacbench_remote.__all__) <= set(dir(dacbench_remote))
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        dacbench_remote.Nope  # noqa: B018


def test_every_directory_of_modules_is_a_regular_package():
    """setuptools' find_packages (pyproject.toml) ships only directories with an __init__.py."""
    directories = {path.parent for path in PACKAGE_DIR.rglob("*.py")}
    assert sorted(str(d.relative_to(PACKAGE_DIR)) for d in directories
                  if not (d / "__init__.py").is_file()) == []


def test_a_sweeps_driver_and_its_status_need_neither_gymnasium_nor_the_runner():
    """A driver starts its zygotes first; the runner, gymnasium and the wire codec are the
    trial workers' (and the worker host imports them meanwhile). status/report need none."""
    code = ("import sys, dacbench_remote.sweeps.driver, dacbench_remote.sweeps.reporting; "
            "print(' '.join(m for m in sys.modules if m.startswith(('gymnasium', 'Pyro5', "
            "'numpy', 'dacbench_remote.host.runner', 'dacbench_remote.host.client', "
            "'dacbench_remote.wire.codec'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []
