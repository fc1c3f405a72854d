"""The local runtime: the server in a plain subprocess, optionally in another interpreter or venv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import RuntimeUnavailable
from .base import SERVER_MODULE, Runtime

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class LocalRuntime(Runtime):
    """Start `PYTHON -m dacbench_remote.server` directly; no container, no image.

    `python` lets a benchmark whose dependencies conflict with the host's live in its own venv;
    that interpreter needs numpy, Pyro5 and the benchmark, and imports this package from here.
    """

    name = "local"

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        self.python = python or sys.executable
        self.extra_env = dict(env or {})

    def prepare(self) -> None:
        if not os.access(self.python, os.X_OK):
            raise RuntimeUnavailable(
                f"interpreter {self.python!r} does not exist or is not executable; pass "
                "python=/path/to/venv/bin/python"
            )

    def server_command(self, socket_path: Path) -> list[str]:
        return [self.python, "-m", SERVER_MODULE, "--socket", str(socket_path),
                "--exit-on-stdin-close"]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        # The interpreter may be another venv: let it find this very copy of the server. A
        # PYTHONPATH given in env= comes first, as in the container runtimes, but adds to it.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [
            self.extra_env.get("PYTHONPATH"), _PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
        return env

    def describe(self) -> dict:
        return {"runtime": self.name, "python": self.python}
