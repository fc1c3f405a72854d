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
import select
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import UnpackError, ZygoteError, ZygoteUnsupported
from ..host.zygote_client import WarmServer
from ..runtimes import make_runtime
from ..runtimes.base import Runtime
from ..runtimes.bwrap import BwrapRuntime
from ..wire.baselines import is_baseline_spec
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
        runtime = zygote_runtime(trial)
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
                runtime, unpacked = zygote_runtime(trial), False

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


def zygote_runtime(trial: Trial) -> Runtime:
    """The runtime of the trial's servers, made from the trial's options as RemoteRunner makes
    it (tests/test_zygote.py compares them), without importing the runner: a driver starts its
    zygotes without the runner's gymnasium and wire codec. A container runtime's image was
    pinned by prefetch_images before any trial starts.
    """
    options = trial.runtime
    return make_runtime(options.kind, image=options.image, python=options.python,
                        binds=options.binds, env=dict(options.env), gpu=options.gpu)


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
