"""Warm trials: each local executor slot keeps one zygote server (container started, benchmark
imported) per runtime setup, and each trial's worker gets its own freshly forked child server.

The trial's worker holds the child's lifeline, so a worker that times out, crashes or is killed
takes its child server with it and nothing else; a dead zygote is started again for the next
trial. A zygote that an image does not support (older server) means fresh servers, said once.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from pathlib import Path

from ..channel import DATA_SUFFIX
from ..runner import RemoteRunner
from ..zygote import WarmServer, ZygoteError, ZygoteUnsupported, request_fork
from .supervisor import ZYGOTE_ENV  # noqa: F401 - where workers find the zygote
from .trial import Trial


def preload_modules(benchmark: str) -> list[str]:
    """What the zygote imports before forking: the factory's module, or DACBench's benchmarks."""
    if ":" in benchmark:
        return [benchmark.split(":", 1)[0]]
    return ["dacbench.benchmarks"]


def runner_options(trial: Trial) -> dict:
    """RemoteRunner arguments that decide where and how the trial's server runs."""
    runtime = trial.runtime
    return dict(runtime=runtime.kind, experiment=trial.experiment, image=runtime.image,
                python=runtime.python, binds=runtime.binds, env=runtime.env, gpu=runtime.gpu,
                startup_timeout=runtime.startup_timeout, call_timeout=runtime.call_timeout)


class WarmSlots:
    """Zygotes per executor thread and runtime setup; `socket_for` gives the trial's zygote."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._local = threading.local()
        self._all: list[WarmServer] = []
        self._lock = threading.Lock()
        self._unsupported: set[str] = set()

    def socket_for(self, trial: Trial) -> tuple[str, int] | None:
        """The zygote's control socket and process for this trial, or None: a fresh server."""
        if not self.enabled:
            return None
        key = repr([*sorted(runner_options(trial).items()), ("benchmark", trial.benchmark)])
        if key in self._unsupported:
            return None
        servers = self._local.__dict__.setdefault("servers", {})
        warm = servers.get(key)
        if warm is not None and not warm.alive():
            warm.stop()  # died with a trial: start it again
            warm = None
        if warm is None:
            runner = RemoteRunner(trial.benchmark, **runner_options(trial))
            warm = WarmServer(runner._make_runtime(), preload_modules(trial.benchmark),
                              startup_timeout=trial.runtime.startup_timeout)
            with self._lock:
                self._all.append(warm)
            try:
                warm.start()
            except ZygoteUnsupported as exc:
                with self._lock:
                    if key not in self._unsupported:
                        print(f"warning: warm trials are off for {trial.benchmark}: {exc}",
                              file=sys.stderr)
                    self._unsupported.add(key)
                return None
            servers[key] = warm
        return str(warm.server.socket_path), warm.server.pid

    def close(self) -> None:
        """Stop every zygote (and so every child), with their sockets and mounts."""
        with self._lock:
            servers, self._all = self._all, []
        for warm in servers:
            warm.stop()


class ForkedRunner(RemoteRunner):
    """A RemoteRunner attached to a child server forked from the zygote on `zygote_socket`.

    Closing it closes the lifeline: the child server shuts down and removes its sockets.
    """

    def __init__(self, trial: Trial, zygote_socket: str, **kwargs):
        super().__init__(trial.benchmark, config=trial.config or None,
                         kwargs=trial.kwargs or None, **runner_options(trial), **kwargs)
        self.zygote_socket = zygote_socket
        self.preload = preload_modules(trial.benchmark)
        self.runtime = self._make_runtime()  # for describe() in the results; never started
        self.attach_to = "forked"
        self._lifeline: int | None = None

    def _attach(self) -> None:
        from ..client import ServerConnection
        from ..sockets import socket_answers

        started = time.monotonic()
        name = f"t-{secrets.token_hex(4)}"
        child, _pid, self._lifeline = request_fork(self.zygote_socket, name, self.preload,
                                                   timeout=self.startup_timeout)
        data = Path(str(child) + DATA_SUFFIX)
        deadline = started + self.startup_timeout
        while not (data.exists() and socket_answers(child)):
            if time.monotonic() > deadline:
                raise ZygoteError(f"the forked server did not answer on {child} within "
                                  f"{self.startup_timeout:.0f} s")
            time.sleep(0.002)
        self.connection = ServerConnection(child, timeout=self.call_timeout,
                                           handshake_timeout=min(5.0, self.startup_timeout))
        self.startup_seconds = time.monotonic() - started

    def close(self) -> None:
        try:
            super().close()
        finally:
            lifeline, self._lifeline = self._lifeline, None
            if lifeline is not None:
                os.close(lifeline)
