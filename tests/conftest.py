"""Shared fixtures: an unprivileged user with its own Python, for testing rootless paths for real."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_USER = "dacbr-test"
SHARED_DIR = Path("/var/tmp/dacbench-remote-tests")
# What the unprivileged user's host side needs (the benchmarks themselves live in images).
USER_VENV_PACKAGES = ["numpy", "gymnasium", "Pyro5", "requests", "spython", "setuptools>=64"]


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in [*sorted((REPO / "dacbench_remote").rglob("*.py")), REPO / "pyproject.toml"]:
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
    if os.geteuid() != 0:
        pytest.skip("creating an unprivileged test user needs root (run the suite as root, as CI does)")
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        pytest.skip("runuser/useradd not found (package util-linux / passwd)")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER], check=True)
    return TEST_USER


@pytest.fixture(scope="session")
def user_python(unprivileged_user: str) -> str:
    """A Python interpreter the unprivileged user can run, with dacbench-remote installed (not editable).

    The suite's own interpreter may live under /root (mode 0700), so the user gets a venv on
    Debian's python3 in a world-readable place, rebuilt when the package source changes.
    """
    base = shutil.which("python3", path="/usr/bin")
    if base is None:
        pytest.skip("Debian's /usr/bin/python3 is missing (apt-get install python3)")
    venv = SHARED_DIR / f"venv-{_source_digest()}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        SHARED_DIR.mkdir(parents=True, exist_ok=True)
        os.chmod(SHARED_DIR, 0o755)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        subprocess.run([*pip, *USER_VENV_PACKAGES], check=True)
        subprocess.run([*pip, "--no-deps", "--no-build-isolation", str(REPO)], check=True,
                       cwd=str(SHARED_DIR))
        (venv / ".complete").touch()
    return str(python)
