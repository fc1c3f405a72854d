"""ForkedRunner: a trial's RemoteRunner whose server is forked from its slot's zygote
(sweeps/warm.py), with the trial's env made as it is forked. Used in the trial's worker only.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from .._sys.sockets import DATA_SUFFIX, socket_answers
from ..errors import ZygoteError
from ..host.client import RemoteEnvironmentClient, ServerConnection
from ..host.forked_env import PendingFork, request_fork_with_env
from ..host.runner import RemoteRunner
from ..host.zygote_client import request_fork
from ..wire.channel import SocketChannel, set_kernel_deadline
from .trial import Trial
from .warm import preload_modules


class ForkedRunner(RemoteRunner):
    """A RemoteRunner attached to a child server forked from the zygote on `zygote_socket`.

    With `first_env` (trials whose agent runs here) the child makes the runner's env as it is
    forked (fork_with_env: one round trip, and that env's calls go through its data channel
    only); a trial running DACBench's baseline in the server makes no env of its own. `ahead`:
    the slot's next trial makes the same env (fork_with_env). `pending`: that request, sent
    already (request_trial_server; the runner takes it over, answer and lifeline).
    Closing the runner closes the lifeline: the child server shuts down and removes its sockets.
    """

    def __init__(self, trial: Trial, zygote_socket: str, first_env: bool = True,
                 ahead: bool = False, pending: PendingFork | None = None, **kwargs):
        super().__init__(trial.benchmark, config=trial.config or None,
                         kwargs=trial.kwargs or None, experiment=trial.experiment,
                         options=trial.runtime, **kwargs)
        self.trial, self.zygote_socket = trial, zygote_socket
        self.preload = preload_modules(trial.benchmark)
        self.runtime = self._make_runtime()  # for describe() in the results; never started
        self.attach_to = "forked"
        self.first_env, self.ahead = first_env, ahead
        self._pending = pending
        self._lifeline: int | None = None
        self._prepared: RemoteEnvironmentClient | None = None

    def _attach(self) -> None:
        started = time.monotonic()
        if self.first_env:
            pending, self._pending = self._pending, None
            if pending is None:
                pending = request_trial_server(self.trial, self.zygote_socket, self.ahead)
            forked = pending.result()
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
            child, _pid, self._lifeline = request_fork(self.zygote_socket, _server_name(),
                                                       self.preload,
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
            pending, self._pending = self._pending, None
            if pending is not None:  # sent for us, never read: its server goes
                pending.close()
            prepared, self._prepared = self._prepared, None
            if prepared is not None:  # never used: the server goes with its lifeline
                prepared._channel.close()
            lifeline, self._lifeline = self._lifeline, None
            if lifeline is not None:
                os.close(lifeline)


def request_trial_server(trial: Trial, zygote_socket: str, ahead: bool) -> PendingFork:
    """Send the fork request of the trial's server (with its env) now, for a ForkedRunner made
    later (`pending=`): exactly the request the runner would send itself."""
    return request_fork_with_env(zygote_socket, _server_name(), preload_modules(trial.benchmark),
                                 trial.benchmark, trial.config or None, trial.kwargs or None,
                                 timeout=trial.runtime.startup_timeout, ahead=ahead)


def _server_name() -> str:
    return f"t-{secrets.token_hex(4)}"
