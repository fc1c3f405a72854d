"""The runtime contract: a Runtime turns a socket path into a running server process.

Every runtime (local, bwrap, apptainer) only decides *which command* starts the server and what
must be prepared or cleaned up around it; starting, watching and stopping the process is shared
here so that all runtimes behave the same when closed, killed or crashed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from ..sockets import remove_socket_files

# Printed by `ps` so that `dacbench-remote ps/cleanup` can find our servers.
SERVER_MODULE = "dacbench_remote.server"


class Runtime(ABC):
    """A way of starting `python -m dacbench_remote.server --socket PATH` somewhere."""

    name: str = "abstract"
    # Appended to every server command: e.g. ("--zygote",) starts a zygote (see zygote.py).
    server_args: tuple[str, ...] = ()

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

    def start(self, socket_path: Path) -> ServerProcess:
        """Start a server on `socket_path` and return a handle to it (not yet connected)."""
        self.prepare()
        return ServerProcess(self.server_command(socket_path), socket_path, self)


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
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGTERM)
                try:
                    self.process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.process.wait()
            # Children the server may have left in its group (e.g. a benchmark's own workers).
            self._signal_group(signal.SIGKILL)
        finally:
            remove_socket_files(self.socket_path)
            self.runtime.cleanup()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # group already gone
            os.killpg(self.process.pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        """Wait until the process has exited; True if it did within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.02)
        return not self.alive()
