"""The runtime contract: a Runtime turns a socket path into a running server process.

Every runtime (local, bwrap, apptainer) only decides *which command* starts the server and what
must be prepared or cleaned up around it; starting, watching and stopping the process is shared
here so that all runtimes behave the same when closed, killed or crashed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._sys.procfs import terminate_then_kill, wait_until
from .._sys.sockets import check_private_socket_dir, remove_socket_files
from ..errors import BadConfig

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Printed by `ps` so that `dacbench-remote ps/cleanup` can find our servers.
SERVER_MODULE = "dacbench_remote.server"


@dataclass
class Launch:
    """One start in progress: the command, and (once started) its server."""

    argv: list[str]
    server: ServerProcess | None = None


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

    @contextlib.contextmanager
    def launch(self, socket_path: Path) -> Iterator[Launch]:
        """Surround one start: yields its command; the server is set on it once started."""
        yield Launch(self.server_command(socket_path))

    def start(self, socket_path: Path) -> ServerProcess:
        """Start a server on `socket_path` and return a handle to it (not yet connected)."""
        if self.binds_socket_dir:
            check_private_socket_dir(socket_path)
        self.prepare()
        with self.launch(socket_path) as launch:
            launch.server = ServerProcess(launch.argv, socket_path, self)
        return launch.server


class ServerProcess:
    """A started server: liveness, stderr tail, and a stop that leaves nothing behind.

    The server's stdin is a pipe held open by us (the "lifeline"): when this process exits for
    any reason, even `kill -9`, the pipe closes and the server shuts itself down.
    """

    def __init__(self, argv: Sequence[str], socket_path: Path, runtime: Runtime):
        self.argv = [*argv, *runtime.server_args]
        self.socket_path = Path(socket_path)
        self.runtime = runtime
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
        return "\n".join(text.rstrip().splitlines()[-lines:])

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
    return os.path.normpath(src), os.path.normpath(dst), mode == "ro"


def check_env_names(env: Mapping[str, str]) -> dict[str, str]:
    for name in env:
        if not _ENV_NAME.match(name):
            raise BadConfig(f"environment variable name {name!r} is not a valid shell name")
    return {str(k): str(v) for k, v in env.items()}
