"""The server process's life: serve one control socket and its data socket until shutdown(),
SIGTERM/SIGINT or the host's lifeline closing, then leave no socket behind."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable

import Pyro5.server
import Pyro5.svr_threads  # the Daemon imports it: here once, not in each server a zygote forks

from .. import __version__
from .._sys.sockets import DATA_SUFFIX, remove_socket_files
from ..wire import codec
from ..wire.channel import RUNNER_OBJECT_ID
from ..wire.replies import error_reply
from .control import RemoteRunnerServer
from .data_channel import DataChannelServer

Handover = tuple[socket.socket, dict]  # a fork request's connection and its `make` (zygote)


def serve(socket_path: str, *, exit_on_stdin_close: bool = False,
          activate: Callable[[threading.Event], bool | Handover] | None = None,
          handed: Handover | None = None, premake: dict | None = None) -> None:
    """Serve until shutdown(), SIGTERM/SIGINT, or (optionally) until stdin closes.

    `activate` (a zygote's spare server) is called once the sockets listen, before stdin is
    watched; it returns when the server is handed out (True: its lifeline is now stdin; or a
    Handover, see `handed`) or discarded (False), or when `done` is set (a stop). `handed`: a
    fork request to answer with its first env (answer_fork). `premake` (a spare): that fork
    request's `make`, expected next; its env is made before `activate` is called, and the
    zygote hands this server only a request with that very `make`.
    """
    data_path = socket_path + DATA_SUFFIX
    remove_socket_files(socket_path, keep_dir=True)  # a crashed server's, at our private path
    daemon = Pyro5.server.Daemon(unixsocket=socket_path)
    os.chmod(socket_path, 0o600)
    stop = _Stop()

    runner = RemoteRunnerServer(daemon, stop.set)
    daemon.register(runner, objectId=RUNNER_OBJECT_ID)
    data = DataChannelServer(data_path, runner.environments)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop.set)
    prepared = None if premake is None else prepare_fork_answer(runner, socket_path, premake)
    if activate is not None:
        activated = activate(stop.event)
        if not activated:
            _shutdown(data, runner, socket_path)  # a spare server that was never handed out
        if isinstance(activated, tuple):
            handed = activated
    if handed is not None:
        conn, make = handed
        if prepared is None or make != premake:  # (the zygote hands a premade spare no other)
            prepared = prepare_fork_answer(runner, socket_path, make)
        answer_fork(data, conn, prepared)
    print(f"dacbench-remote server {__version__} (wire {codec.WIRE_VERSION}) listening on "
          f"{socket_path}", file=sys.stderr, flush=True)
    _serve_events(daemon, data, stop, exit_on_stdin_close)
    _shutdown(data, runner, socket_path)


def prepare_fork_answer(runner: RemoteRunnerServer, socket_path: str, make: dict) -> dict:
    """The answer to a zygote's fork request with `make`: the fork's answer (pid, socket), the
    handshake's reply (`hello`) and, when that is ok, `make_env`'s reply (the env is made now)
    and, when that is ok, the env's `info` reply."""
    answer = {"ok": True, "pid": os.getpid(), "socket": os.path.basename(socket_path),
              "hello": runner.hello(make.get("wire_version"))}
    if answer["hello"]["ok"]:
        made = answer["make_env"] = runner.make_env(make["target"], make.get("config"),
                                                    make.get("kwargs"))
        if made["ok"]:
            answer["info"] = runner.environments[made["value"]["env_id"]].info()
    return answer


def answer_fork(data: DataChannelServer, conn: socket.socket, answer: dict) -> None:
    """Send the fork's `answer` (prepare_fork_answer) on the request's connection `conn`, in one
    JSON line; `conn` then carries the env's data channel. So the host creates an env in a
    forked server in one round trip."""
    conn.setblocking(True)  # the zygote's timeout made the shared descriptor non-blocking
    try:
        conn.sendall((json.dumps(answer) + "\n").encode())
    except OSError:  # the host gave up; its lifeline closes too
        conn.close()
        return
    if "info" in answer and answer["info"]["ok"]:
        data.serve_connection(conn, answer["make_env"]["value"]["env_id"])
    else:
        conn.close()


class _Stop:
    """The server's stop: an event, set by shutdown(), a signal or the lifeline closing, which
    also wakes _serve_events's select (through a pipe)."""

    def __init__(self):
        self.event = threading.Event()
        self.wake_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)

    def set(self, *_) -> None:
        self.event.set()
        with contextlib.suppress(OSError):  # the pipe is full: it wakes the select anyway
            os.write(self._write_fd, b"\0")


def _serve_events(daemon: Pyro5.server.Daemon, data: DataChannelServer, stop: _Stop,
                  exit_on_stdin_close: bool) -> None:
    """Until `stop` is set: accept data connections (each served by its own thread), hand
    control connections to Pyro5's thread pool, and, with `exit_on_stdin_close`, stop when
    stdin closes (the host holds it open: EOF means it is gone, even after kill -9).

    One loop on the main thread instead of a thread each: a zygote forks a server per trial,
    and in a forked process every thread started costs about half a millisecond of CPU.
    """
    control = daemon.sockets
    stdin = sys.stdin.fileno() if exit_on_stdin_close else None
    watched = [stop.wake_fd, data.listener, *control] + ([stdin] if stdin is not None else [])
    while not stop.event.is_set():
        ready, _, _ = select.select(watched, [], [])
        if stdin is not None and stdin in ready:
            try:
                if not os.read(stdin, 4096):
                    break
            except OSError:
                break
        if data.listener in ready:
            data.accept()
        if any(sock in ready for sock in control):
            daemon.events(control)
    stop.set()


def _shutdown(data: DataChannelServer, runner: RemoteRunnerServer, socket_path: str) -> None:
    data.close()
    runner.discard_baselines()  # their threads die with the process; their logs must not stay
    for env_id in list(runner.environments):
        try:
            # An env stuck in step() holds its lock forever: never let it keep us alive.
            reply = runner.close_env(env_id, wait=1.0)
        except Exception as exc:  # one env failing to close must not keep the others alive
            reply = error_reply(exc)
        if not reply["ok"]:
            error = reply["error"]
            print(f"closing environment {env_id} failed: {error['type']}: {error['message']}",
                  file=sys.stderr)
    # Not Pyro5's daemon.shutdown(): its sleeps and thread joins cost 0.2 s per server, and the
    # process exits right here. Our sockets go, and our private directory when the host made
    # one and can no longer remove it (killed): an empty one would be left in the socket root.
    remove_socket_files(socket_path)
    sys.stderr.flush()
    # Env libraries may leave non-daemon threads behind; they must not keep the server alive.
    os._exit(0)
