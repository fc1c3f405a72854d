"""The runtime contract: a Runtime turns a socket path into a running server process.

Every runtime (local, bwrap, apptainer) only decides *which command* starts the server and what
must be prepared or cleaned up around it; starting, watching and stopping the process is shared
here so that all runtimes behave the same when closed, killed or crashed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._sys.procfs import terminate_then_kill, wait_until
from .._sys.sockets import check_private_socket_dir, remove_socket_files
from ..errors import BadConfig

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Printed by `ps` so that `dacbench-remote ps/cleanup` can find our servers.
SERVER_MODULE = "dacbench_remote.server"
# Where a container runtime binds the server's socket directory (as CONTAINER_SOCKET_DIR/<id>)
# when it cannot appear at its host path: /tmp is the one place a mount point can always be made
# inside (a tmpfs under bwrap; Apptainer's session or workdir /tmp, even without overlay).
CONTAINER_SOCKET_DIR = "/tmp/dacbench-remote"
# Variables a container's environment cannot be given: Apptainer drops HOME, UID, GID and its
# own shell/app variables from APPTAINERENV_* with at most a warning (internal/pkg/util/env/
# create.go alwaysOmitKeys; process_linux.go injectEnvHandler), so they are refused for every
# container runtime alike.
UNSETTABLE_ENV = {
    "HOME": "the container's HOME is set by the runtime (Apptainer drops APPTAINERENV_HOME with "
            "only a warning); point your code at another variable, e.g. MY_DATA_DIR",
    "UID": "Apptainer never injects UID", "GID": "Apptainer never injects GID",
    "APPTAINER_SHELL": "Apptainer does not let it be overridden",
    "APPTAINER_APPNAME": "Apptainer does not let it be overridden",
    "SINGULARITY_SHELL": "Apptainer does not let it be overridden",
    "SINGULARITY_APPNAME": "Apptainer does not let it be overridden",
}

# Variables that choose a numeric library's kernels and threads (OpenBLAS's core type, OpenMP's
# and MKL's thread counts, numpy's CPU features, ...). An in-process run reads the host's; a
# container gets them too, so that a remote env computes what the in-process one computes (with
# another BLAS kernel, CMA-ES episodes diverge after a few steps). `env` overrides them.
NUMERIC_ENV_PREFIXES = ("OPENBLAS_", "GOTO_", "OMP_", "KMP_", "MKL_", "BLIS_", "NUMEXPR_",
                        "VECLIB_", "NPY_")


def numeric_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of `environ` that numeric libraries read (NUMERIC_ENV_PREFIXES)."""
    return {name: value for name, value in environ.items()
            if name.startswith(NUMERIC_ENV_PREFIXES) and _ENV_NAME.match(name)}


@dataclass
class Launch:
    """One start in progress: the command, (once started) its server, and what to undo when
    that server stops (e.g. remove its work directory)."""

    argv: list[str]
    server: ServerProcess | None = None
    on_stop: list[Callable[[], None]] = field(default_factory=list)


class Runtime(ABC):
    """A way of starting `python -m dacbench_remote.server --socket PATH` somewhere.

    A runtime decides the command (`server_command`) and what must surround it: `prepare`
    (one-time work), `launch` (work around one start, e.g. a mount held until the container
    takes it over), `cleanup`. Starting, watching and stopping the process is shared here.
    """

    name: str = "abstract"
    # Appended to every server command: e.g. ("--zygote",) starts a zygote (see server/zygote.py).
    server_args: tuple[str, ...] = ()
    # Containers get the server's socket directory bound in whole: it must be private to it.
    binds_socket_dir: bool = False

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Do slow one-time work (extract an image, check binaries) before the first start."""

    @abstractmethod
    def server_command(self, socket_path: Path) -> list[str]:
        """The argv that starts a server listening on `socket_path` (a host path)."""

    def environment(self) -> dict[str, str] | None:
        """Environment for the started process; None inherits the caller's."""
        return None

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Undo what prepare() set up that must not outlive the server (mounts)."""

    def describe(self) -> dict:
        """Facts recorded with results (runtime name, image, interpreter, ...)."""
        return {"runtime": self.name}

    def explain_output(self, output: str) -> str | None:
        """A hint for a server's last output, when the runtime knows what it means."""
        return None

    @contextlib.contextmanager
    def launch(self, socket_path: Path) -> Iterator[Launch]:
        """Surround one start: yields its command; the server is set on it once started."""
        yield Launch(self.server_command(socket_path))

    def start(self, socket_path: Path) -> ServerProcess:
        """Start a server on `socket_path` and return a handle to it (not yet connected).

        Interrupted on the way (a trial's SIGTERM, Ctrl-C), it stops what it started and
        removes the socket's directory: the caller never got a handle to clean up with.
        """
        if self.binds_socket_dir:
            check_private_socket_dir(socket_path)
        server = None
        try:
            self.prepare()
            with self.launch(socket_path) as launch:
                launch.server = server = ServerProcess(launch.argv, socket_path, self,
                                                       on_stop=launch.on_stop)
        except BaseException:
            if server is not None:
                server.stop()
            else:
                remove_socket_files(socket_path)
            raise
        return server


class ContainerRuntime(Runtime):
    """A runtime that runs an image in a container. What every container runtime takes (the
    image, binds, environment variables for inside) is checked here, once; the server's socket
    directory is bound in whole, so it must be private to the server."""

    binds_socket_dir = True

    def __init__(self, image: str | os.PathLike, *, binds: Iterable = (),
                 env: Mapping[str, str] | None = None):
        self.image = Path(image).absolute()
        self.binds = [parse_bind(spec) for spec in binds]
        self.env = check_container_env(dict(env or {}))

    def container_env(self) -> dict[str, str]:
        """What is set inside: the host's numeric-library variables (numeric_environment),
        then `env`, which wins."""
        return {**numeric_environment(os.environ), **self.env}


class ServerProcess:
    """A started server: liveness, stderr tail, and a stop that leaves nothing behind.

    The server's stdin is a pipe held open by us (the "lifeline"): when this process exits for
    any reason, even `kill -9`, the pipe closes and the server shuts itself down.
    """

    def __init__(self, argv: Sequence[str], socket_path: Path, runtime: Runtime, *,
                 on_stop: Sequence[Callable[[], None]] = ()):
        self.argv = [*argv, *runtime.server_args]
        self.socket_path = Path(socket_path)
        self.runtime = runtime
        self._on_stop = list(on_stop)
        # Closed with this object: the output tail is read from it after the server is gone.
        self._log = tempfile.TemporaryFile(prefix="dacbench-remote-server-")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=runtime.environment(),
            start_new_session=True,  # own process group: stop() can reach every child
        )
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """True while the server process has not exited."""
        return self.process.poll() is None

    def output_tail(self, lines: int = 30) -> str:
        """The last lines the server printed (stdout and stderr), for error messages."""
        try:
            self._log.flush()
            self._log.seek(0)
            text = self._log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        tail = "\n".join(text.rstrip().splitlines()[-lines:])
        hint = self.runtime.explain_output(text)
        return f"{tail}\n({hint})" if hint else tail

    def stop(self, grace: float = 3.0) -> None:
        """Stop the server (lifeline, then SIGTERM, then SIGKILL), remove sockets and mounts."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()  # lifeline: the server exits on its own
            if not self.wait_gone(grace):
                terminate_then_kill(self._signal_group, lambda: not self.alive(), grace)
                self.process.wait()
            # Children the server may have left in its group (e.g. a benchmark's own workers).
            self._signal_group(signal.SIGKILL)
        finally:
            remove_socket_files(self.socket_path)
            for undo in self._on_stop:
                undo()
            self.runtime.cleanup()

    def _signal_group(self, sig: int) -> int:
        """Signal the server's process group; 1 if it was there, 0 if it is gone."""
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):  # group already gone
            return 0
        return 1

    def wait_gone(self, timeout: float) -> bool:
        """Wait until the process has exited; True if it did within `timeout` seconds."""
        return wait_until(lambda: not self.alive(), timeout)


def parse_bind(spec: str | tuple) -> tuple[str, str, bool]:
    """`SRC[:DST[:ro|rw]]` (Apptainer's syntax) or a (src, dst[, "ro"]) tuple -> (src, dst, ro)."""
    parts = list(spec) if isinstance(spec, (tuple, list)) else str(spec).split(":")
    if not 1 <= len(parts) <= 3 or not all(parts[:2]):
        raise BadConfig(f"bind {spec!r} is not SRC[:DST[:ro|rw]]")
    src = str(parts[0])
    dst = str(parts[1]) if len(parts) > 1 else src
    mode = str(parts[2]) if len(parts) > 2 else "rw"
    if mode not in ("ro", "rw"):
        raise BadConfig(f"bind {spec!r}: the option must be 'ro' or 'rw', not {mode!r}")
    if not os.path.isabs(src) or not os.path.isabs(dst):
        raise BadConfig(f"bind {spec!r}: source and destination must be absolute paths")
    if "," in src or "," in dst:
        # Apptainer's --bind takes a comma-separated list (ParseBindPath in
        # pkg/runtime/engine/apptainer/config/bind.go): a comma would split this bind in two.
        raise BadConfig(f"bind {spec!r}: paths with commas cannot be bound (Apptainer's --bind "
                        "splits on commas); rename the directory or bind a parent of it")
    return os.path.normpath(src), os.path.normpath(dst), mode == "ro"


def check_env_names(env: Mapping[str, str]) -> dict[str, str]:
    for name in env:
        if not _ENV_NAME.match(name):
            raise BadConfig(f"environment variable name {name!r} is not a valid shell name")
    return {str(k): str(v) for k, v in env.items()}


def check_container_env(env: Mapping[str, str]) -> dict[str, str]:
    """check_env_names, and refuse what no container runtime can set (UNSETTABLE_ENV)."""
    for name in env:
        if name in UNSETTABLE_ENV:
            raise BadConfig(f"env={{{name!r}: ...}} cannot be set in a container: "
                            f"{UNSETTABLE_ENV[name]}")
    return check_env_names(env)


def prepend_python_path(value: str) -> str:
    """Shell text (for an image's environment after %environment ran) that puts `value` in
    front of the image's own PYTHONPATH, which holds the server package: a PYTHONPATH given
    in env= adds to it instead of hiding it. Quoted for sh, apart from the expansion."""
    return shlex.quote(value) + '"${PYTHONPATH:+:$PYTHONPATH}"'
