"""Shared fixtures: an unprivileged user with its own Python, for testing rootless paths for real."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tomllib

# In CI, a skip whose reason is not on the allowlist in that module fails the run.
pytest_plugins = ["tests.skip_allowlist"]

# A suite started as a background job (`cmd &` in a script) inherits an ignored SIGINT, and so
# would every server it starts: the Ctrl-C tests would then test nothing. Ctrl-C as a user has it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
TEST_USER = "dacbr-test"
SHARED_DIR = Path("/var/tmp/dacbench-remote-tests")
# What a checkout holds beyond its sources (.gitignore's entries, and git's own).
CHECKOUT_LEFTOVERS = (".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", "*.sif",
                      ".hypothesis", ".pytest_cache", ".ruff_cache", ".cache", "results")
# What the unprivileged user's host side needs (the benchmarks themselves live in images).
# The package's own dependencies (as pyproject.toml declares them), and what installs it.
USER_VENV_PACKAGES = [*tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                      ["dependencies"], "setuptools>=64"]
# pytest-timeout's limit (pyproject.toml: 600 s) for tests that may build images (about a minute
# each, several on a cold cache) or venvs of an image's pins: marked here by the fixtures they
# use, or with `pytest.mark.timeout(IMAGE_TIMEOUT)` where they build them themselves.
IMAGE_TIMEOUT = 1800
IMAGE_FIXTURES = {"base_image", "base_image_info", "recipe_image", "recipe_image_info",
                  "standin_image", "agent_image", "agent_image_info"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give tests that use an image fixture the longer time limit, unless they set their own."""
    for item in items:
        uses_images = IMAGE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses_images and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(IMAGE_TIMEOUT))


def _source_digest(packages: list[str] = ()) -> str:
    """What a user venv is built from: the package source, its package data (the catalog's pins
    and the recipes, installed with it: a re-pin must give a new venv) and the packages
    installed beside it."""
    digest = hashlib.sha256(repr(sorted(packages)).encode())
    data = [*sorted((REPO / "benchmarks").glob("*.toml")),
            *sorted(p for p in (REPO / "recipes").rglob("*") if p.is_file())]
    for path in [*sorted((REPO / "dacbench_remote").rglob("*.py")), *data,
                 REPO / "pyproject.toml"]:
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_as(user: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run argv as `user` through runuser, in a directory that user can enter."""
    kwargs.setdefault("cwd", "/")
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(["runuser", "-u", user, "--", *argv], **kwargs)


@pytest.fixture(scope="session")
def unprivileged_user() -> str:
    """An ordinary user (created with useradd) to run rootless code paths as."""
    # Imported here: pytest must load the tests.skip_allowlist plugin (which needs uses) first.
    from tests.needs import need_root, need_tools

    need_root("creating an unprivileged test user")
    need_tools("runuser", "useradd")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER], check=True)
    return TEST_USER


def _user_venv(name: str, packages: list[str], no_deps: tuple[str, ...] = ()) -> str:
    """A venv on Debian's python3 in a world-readable place, with dacbench-remote (not editable).

    The suite's own interpreter may live under /root (mode 0700), so the user gets its own,
    rebuilt when the package source changes.
    """
    base = shutil.which("python3", path="/usr/bin")
    if base is None:
        pytest.fail("Debian's /usr/bin/python3 is missing (apt-get install python3)")
    venv = SHARED_DIR / f"{name}-{_source_digest([*packages, *no_deps])}"
    python = venv / "bin" / "python"
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(SHARED_DIR, 0o755)
    # Two pytest sessions at once (a developer's and CI's) must not build one venv together.
    with open(SHARED_DIR / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _fill_venv(venv, python, base, packages, no_deps)
    return str(python)


def _fill_venv(venv: Path, python: Path, base: str, packages: list[str],
               no_deps: tuple[str, ...]) -> None:
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        subprocess.run([*pip, *packages], check=True)
        if no_deps:
            subprocess.run([*pip, "--no-deps", *no_deps], check=True)
        # From a clean copy of the checkout: setuptools builds in the source's build/, whose
        # leftovers from an older layout would be installed too (and then copied into images
        # this venv builds, which then differ from the pin).
        with tempfile.TemporaryDirectory(dir=SHARED_DIR) as scratch:
            source = Path(scratch) / "dacbench-remote"
            shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*CHECKOUT_LEFTOVERS))
            subprocess.run([*pip, "--no-deps", "--no-build-isolation", str(source)], check=True,
                           cwd=str(SHARED_DIR))
        (venv / ".complete").touch()


@pytest.fixture(scope="session")
def user_python(unprivileged_user: str) -> str:
    """Python for the unprivileged user: dacbench-remote's host side only (no DACBench)."""
    return _user_venv("venv", USER_VENV_PACKAGES)


@pytest.fixture(scope="session")
def user_python_dacbench(unprivileged_user: str) -> str:
    """Python for the unprivileged user with DACBench 0.5.6 too, to write benchmark objects."""
    requirements = REPO / "tests" / "requirements-dacbench.txt"
    light = [line for line in requirements.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return _user_venv("venv-dacbench", [*USER_VENV_PACKAGES, *light], ("dacbench==0.5.6",))

