"""Warm trials: each local executor slot keeps one zygote server (container started, benchmark
imported) per runtime setup, and each trial's worker gets its own freshly forked child server.

The trial's worker holds the child's lifeline, so a worker that times out, crashes or is killed
takes its child server with it and nothing else; a dead zygote is started again for the next
trial. A zygote that an image does not support (older server) means fresh servers, said once.
With bwrap the zygote runs from the image's unpacked root filesystem where unsquashfs is here
(`prefer_unpacked`), not through squashfuse.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .._sys.sockets import DATA_SUFFIX, socket_answers
from ..errors import UnpackError, ZygoteError, ZygoteUnsupported
from ..host.client import RemoteEnvironmentClient, ServerConnection
from ..host.runner import RemoteRunner
from ..host.zygote_client import WarmServer, fork_with_env, request_fork
from ..runtimes.bwrap import BwrapRuntime
from ..wire.baselines import is_baseline_spec
from ..wire.channel import SocketChannel, set_kernel_deadline
from .trial import Trial, canonical_json
from .trial_runner import SUPERVISOR_ENV, ZYGOTE_ENV


def preload_modules(benchmark: str) -> list[str]:
    """What the zygote imports before forking: the factory's module, or DACBench's benchmarks."""
    if ":" in benchmark:
        return [benchmark.split(":", 1)[0]]
    return ["dacbench.benchmarks"]


class WarmSlots:
    """Zygotes per executor thread and runtime setup; `socket_for` gives the trial's zygote."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._local = threading.local()
        self._all: list[WarmServer | WorkerHost] = []
        self._lock = threading.Lock()
        self._unsupported: set[str] = set()

    def socket_for(self, trial: Trial) -> tuple[str, int] | None:
        """The zygote's control socket and process for this trial, or None: a fresh server."""
        if not self.enabled:
            return None
        key = repr((trial.benchmark, trial.experiment, trial.runtime.key()))
        if key in self._unsupported:
            return None
        servers = self._local.__dict__.setdefault("servers", {})
        warm = servers.get(key)
        if warm is not None and not warm.alive():
            warm.stop()  # died with a trial: start it again
            warm = None
        if warm is None:
            try:
                warm = self._start_zygote(trial)
            except ZygoteUnsupported as exc:
                with self._lock:
                    if key not in self._unsupported:
                        print(f"warning: warm trials are off for {trial.benchmark}: {exc}",
                              file=sys.stderr)
                    self._unsupported.add(key)
                return None
            servers[key] = warm
        return str(warm.server.socket_path), warm.server.pid

    def _start_zygote(self, trial: Trial) -> WarmServer:
        """A started zygote for the trial's benchmark and runtime setup; with bwrap from the
        image's unpacked root filesystem where it can be unpacked (prefer_unpacked)."""
        runner = RemoteRunner(trial.benchmark, experiment=trial.experiment, options=trial.runtime)
        runtime = runner._make_runtime()
        unpacked = prefer_unpacked(runtime)
        while True:
            warm = WarmServer(runtime, preload_modules(trial.benchmark),
                              startup_timeout=trial.runtime.startup_timeout)
            with self._lock:
                self._all.append(warm)
            try:
                warm.start()
                return warm
            except UnpackError as exc:
                if not unpacked:
                    raise
                # No room for the unpacked root, say: through squashfuse, as without warm trials.
                print(f"warning: {exc}; the zygote reads the image through squashfuse",
                      file=sys.stderr)
                warm.stop()
                runtime, unpacked = runner._make_runtime(), False

    def worker_host(self) -> WorkerHost | None:
        """This slot's worker host (started now if it is not running), or None when not warm."""
        if not self.enabled:
            return None
        host = getattr(self._local, "host", None)
        if host is None or not host.alive():
            if host is not None:
                host.stop()
            host = self._local.host = WorkerHost()
            with self._lock:
                self._all.append(host)
        return host

    def close(self) -> None:
        """Stop every zygote (and so every child) and worker host, with sockets and mounts."""
        with self._lock:
            servers, self._all = self._all, []
        for warm in servers:
            warm.stop()


def makes_same_env(trial: Trial, other: Trial) -> bool:
    """Whether `other`'s server makes the same first env as `trial`'s, in the same zygote
    (a forked server makes none for DACBench's baselines, which build theirs themselves)."""
    def made(t: Trial):
        return (t.benchmark, t.experiment, t.runtime.key(), canonical_json(t.config),
                canonical_json(t.kwargs))
    return not (is_baseline_spec(trial.agent) or is_baseline_spec(other.agent)) and \
        made(trial) == made(other)


def prefer_unpacked(runtime) -> bool:
    """Make a bwrap runtime that was left to choose (use_fuse None) run from the image's
    unpacked root filesystem, when unsquashfs is here; returns whether it did.

    Why: a zygote imports the benchmark once per sweep slot, and through squashfuse (gzip
    images) DACBench's import takes seconds; from the unpacked root, cached per image under the
    user's cache and read through the page cache, a fraction of that, and the first unpacking
    costs about as much as one import through squashfuse (docs/performance.md#sweeps).
    """
    if (isinstance(runtime, BwrapRuntime) and runtime.use_fuse is None
            and shutil.which("unsquashfs") is not None):
        runtime.use_fuse = False
        return True
    return False


class ForkedRunner(RemoteRunner):
    """A RemoteRunner attached to a child server forked from the zygote on `zygote_socket`.

    With `first_env` (trials whose agent runs here) the child makes the runner's env as it is
    forked (fork_with_env: one round trip, and that env's calls go through its data channel
    only); a trial running DACBench's baseline in the server makes no env of its own. `ahead`:
    the slot's next trial makes the same env (fork_with_env).
    Closing the runner closes the lifeline: the child server shuts down and removes its sockets.
    """

    def __init__(self, trial: Trial, zygote_socket: str, first_env: bool = True,
                 ahead: bool = False, **kwargs):
        super().__init__(trial.benchmark, config=trial.config or None,
                         kwargs=trial.kwargs or None, experiment=trial.experiment,
                         options=trial.runtime, **kwargs)
        self.zygote_socket = zygote_socket
        self.preload = preload_modules(trial.benchmark)
        self.runtime = self._make_runtime()  # for describe() in the results; never started
        self.attach_to = "forked"
        self.first_env, self.ahead = first_env, ahead
        self._lifeline: int | None = None
        self._prepared: RemoteEnvironmentClient | None = None

    def _attach(self) -> None:
        started = time.monotonic()
        name = f"t-{secrets.token_hex(4)}"
        if self.first_env:
            forked = fork_with_env(self.zygote_socket, name, self.preload, self.benchmark,
                                   self.config, self.kwargs, timeout=self.startup_timeout,
                                   ahead=self.ahead)
            self._lifeline = forked.lifeline
            if forked.env is not None:
                self.connection = ServerConnection(forked.socket_path, timeout=self.call_timeout,
                                                   facts=forked.facts)
                forked.channel.settimeout(None)
                set_kernel_deadline(forked.channel, self.call_timeout)
                self._prepared = RemoteEnvironmentClient(
                    self.connection, forked.env["env_id"], forked.env["uri"],
                    prepared=(forked.info, SocketChannel(forked.channel)))
                self.startup_seconds = time.monotonic() - started
                return
            child = forked.socket_path  # an older image's zygote: connect as below
        else:
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

    def _make_env(self, connection: ServerConnection) -> RemoteEnvironmentClient:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and connection is self.connection:
            return prepared  # made with the fork
        return super()._make_env(connection)

    def close(self) -> None:
        try:
            super().close()
        finally:
            prepared, self._prepared = self._prepared, None
            if prepared is not None:  # never used: the server goes with its lifeline
                prepared._channel.close()
            lifeline, self._lifeline = self._lifeline, None
            if lifeline is not None:
                os.close(lifeline)


WORKER_MODULE = "dacbench_remote.sweeps.worker"
HOST_TIMEOUT = 60.0  # seconds for a worker host to start and fork


class WorkerHost:
    """A `worker --host` process for one executor slot: it imported the worker's modules once
    and forks each warm trial's worker process (see sweeps.worker.host)."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self._buffer = b""
        self._closed = False  # its output ended: it is gone, even if not yet reaped

    def alive(self) -> bool:
        # A killed host's pipes close before it can be reaped: poll() alone may say it runs.
        return self.process is not None and not self._closed and self.process.poll() is None

    def start(self) -> None:
        """Start the host process (it imports in the background) unless it is running."""
        if self.process is None:
            self._buffer, self._closed = b"", False
            env = {k: v for k, v in os.environ.items() if k != ZYGOTE_ENV}
            env[SUPERVISOR_ENV] = str(os.getpid())
            self.process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, "--host"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env=env,
                start_new_session=True)  # Ctrl-C reaches the driver, which stops trials

    def spawn(self, trial_dir: Path, run_id: str, env: dict[str, str | None]) -> HostedWorker:
        """Fork the trial's worker; `env` holds the variables to set (None: to remove)."""
        self.start()
        request = {"trial_dir": str(trial_dir), "run_id": run_id, "env": env}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            answer = self.read(HOST_TIMEOUT)
        except (OSError, TimeoutError):
            answer = None
        if answer is None or "pid" not in answer:
            pid = self.process.pid
            self.stop()
            raise ZygoteError(f"the sweep's worker host (pid {pid}) did not fork a worker "
                              f"within {HOST_TIMEOUT:.0f} s (see its output above)")
        return HostedWorker(self, answer["pid"])

    def read(self, timeout: float | None) -> dict | None:
        """The host's next message; None on EOF (the host is gone); TimeoutError on time-out."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                self._closed = True
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def stop(self) -> None:
        """Close its stdin (it exits when no trial runs) and make sure it is gone."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        process.stdout.close()


class HostedWorker:
    """A trial's worker forked by a WorkerHost, with the part of Popen's interface that the
    supervisor uses (pid, poll, wait, returncode)."""

    def __init__(self, host: WorkerHost, pid: int):
        self.host, self.pid, self.returncode = host, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._collect(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._collect(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(WORKER_MODULE, timeout)
        return self.returncode

    def _collect(self, timeout: float | None) -> None:
        try:
            answer = self.host.read(timeout)
        except TimeoutError:
            return
        # A host that died took its worker with it (PR_SET_PDEATHSIG): report it as killed.
        self.returncode = -signal.SIGKILL if answer is None else int(answer["exit"])
