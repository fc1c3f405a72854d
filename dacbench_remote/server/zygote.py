"""A zygote server: imports a benchmark once, then forks a fresh, isolated server per request.

Starting a container and importing DACBench costs seconds; forking an already-imported process
costs milliseconds. Each child is an ordinary server (serve.serve) on its own socket next to the
zygote's, so nothing one child's env does to its process (module globals, the global RNG, threads)
reaches the next: each starts from the zygote's untouched memory.

Protocol, one request per connection on the zygote's socket (`{"op": "preload", "preload":
[...]}` just imports, so that the first fork does not wait for it): the host sends one JSON line
`{"op": "fork", "name": NAME, "preload": [MODULE, ...]}` with the read end of a pipe attached
(SCM_RIGHTS; it crosses container namespaces). The zygote imports the modules (once), forks, and
answers `{"ok": true, "pid": PID, "socket": SOCKET}` (use that socket: after the first request
the zygote keeps a spare server forked ahead, already listening, and hands it the request's pipe
instead of forking then). A fork request may also carry `"make": {"target", "config", "kwargs",
"wire_version"}` (config and kwargs as codec trees), and `"ahead": true` when the next request
will ask for the same env (see _Spares): then the zygote hands the request's
connection to the child too, and the child answers it itself, once it made that env, with the
fork's answer plus the server's handshake facts, the env's id, URI and description (see
serve.answer_fork); the connection then carries that env's data channel. Creating an env in a
forked server is one round trip that way, not four (fork, handshake, make_env, info). The child
makes the pipe its stdin, so the existing exit-on-stdin-close lifeline stops it when the host's
end closes (host exit, even kill -9); it also dies with the zygote (PR_SET_PDEATHSIG). The zygote
stays single-threaded
(fork safety) and reaps its children.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import json
import os
import re
import secrets
import select
import signal
import socket
import sys
import traceback
from pathlib import Path

from .._sys.procfs import die_with_parent, fresh_global_rngs, terminate_then_kill
from .._sys.sockets import remove_socket_files
from ..wire.replies import error_reply
from .serve import serve

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}\Z")
MAX_REQUEST = 65536


def zygote(socket_path: str, *, exit_on_stdin_close: bool = False) -> None:
    """Serve fork requests on `socket_path` until SIGTERM/SIGINT or (optionally) stdin EOF."""
    remove_socket_files(socket_path, keep_dir=True)  # a stale one at our own private path
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(16)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    print(f"dacbench-remote zygote listening on {socket_path}", file=sys.stderr, flush=True)
    watched = [listener] + ([sys.stdin] if exit_on_stdin_close else [])
    children: dict[int, str] = {}  # pid -> its control socket
    spares = _Spares(listener, socket_path, children)
    try:
        while not stopping:
            _reap(children)
            try:
                ready, _, _ = select.select(watched, [], [], 0.5)
            except InterruptedError:
                continue
            if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
                break  # the host's lifeline closed
            if listener in ready:
                conn, _ = listener.accept()
                with conn:
                    child, child_socket = _handle(conn, listener, socket_path, spares)
                    if child:
                        children[child] = child_socket
                spares.refill()  # the next trial's server starts while this one runs
    finally:
        listener.close()
        spares.discard()
        _stop_children(children)
        remove_socket_files(socket_path)  # and the directory, once the children's are gone


class _Spares:
    """At most one spare server, forked ahead of the next request: its sockets already listen
    when the request comes, and it becomes that request's child server (same isolation: it was
    forked from the zygote's untouched memory, after the same imports).

    When the last fork request said that the next one will ask for the same env (`"ahead":
    true`: a sweep's next trial differs only in its seed or agent, say), the spare makes that
    env ahead too, while the current trial runs, and is handed only to a request for that very
    env: making it ahead or on request is the same work in the same fresh process, just earlier.
    """

    def __init__(self, listener, socket_path: str, children: dict[int, str]):
        self.listener, self.socket_path = listener, socket_path
        self.children = children
        self.spare: tuple[int, str, socket.socket, int, dict | None] | None = None
        self.ready = False  # set once the benchmark's modules are imported (a request came)
        self.ahead: dict | None = None  # the env the next request will ask for, if known

    def refill(self) -> None:
        if self.spare is not None or not self.ready:
            return
        name = f"z{secrets.token_hex(5)}"
        child_socket = str(Path(self.socket_path).parent / f"{name}.sock")
        premake, self.ahead = self.ahead, None
        # Packets: the hand-over (lifeline, connection, make request) arrives as one message.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _spare(self.listener, theirs, child_socket, premake)
        theirs.close()
        # How many modules it has: not a copy of their names, whose reference counts the
        # zygote would write (copy-on-write faults, milliseconds) while the spare shares them.
        self.spare = (pid, child_socket, ours, len(sys.modules), premake)

    def take(self, lifeline: int, conn: socket.socket | None = None,
             make: dict | None = None, ahead: bool = False) -> tuple[int, str] | None:
        """Hand the spare its lifeline (and, for a fork with `make`, the request's connection
        to answer): (pid, socket), or None when there is no usable one. `ahead`: the next
        request asks for `make` too (the next spare makes it ahead)."""
        self.ahead = make if ahead else None
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        pid, child_socket, control, imported, premade = spare
        self.children[pid] = child_socket  # reaped (its sockets removed) like any child
        try:
            if len(sys.modules) != imported:
                return None  # the zygote imported modules after it was forked: it lacks them
            if premade is not None and premade != make:
                return None  # it made another env: not a fresh server for this one
            fds = [lifeline] if make is None else [lifeline, conn.fileno()]
            message = b"go" + (b"" if make is None else json.dumps(make).encode())
            control.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", fds))])
            return pid, child_socket
        except OSError:  # it died: fork one on demand
            return None
        finally:
            control.close()  # an unused spare sees EOF and shuts down

    def discard(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            self.children[spare[0]] = spare[1]
            spare[2].close()


def _handle(conn: socket.socket, listener: socket.socket, socket_path: str,
            spares: _Spares) -> tuple[int, str]:
    """Answer one request; the child's pid and socket when one was handed out, else 0."""
    conn.settimeout(10.0)
    fds: list[int] = []
    try:
        data, ancillary, _, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(4 * 4))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
        request = json.loads(data)
        if request.get("op") == "preload" and not fds:  # import now, before the first fork
            for module in request.get("preload") or ():
                importlib.import_module(module)
            spares.ready = True
            _send(conn, {"ok": True})
            return 0, ""
        name = request.get("name")
        if request.get("op") != "fork" or not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"expected a fork request with a plain name, got {request!r}")
        if len(fds) != 1:
            raise ValueError("a fork request carries exactly one lifeline fd")
        make = request.get("make")
        if make is not None and not (isinstance(make, dict) and isinstance(make.get("target"),
                                                                           str)):
            raise ValueError(f"a fork's make names a target: {make!r}")
        preload = request.get("preload") or ()
        for module in preload:
            importlib.import_module(module)
        spares.ready = True
        taken = spares.take(fds[0], conn, make, bool(request.get("ahead")))
        if taken is None:
            child_socket = str(Path(socket_path).parent / f"{name}.sock")
            pid = os.fork()
            if pid == 0:
                _child(listener, conn, fds[0], child_socket, make)
        else:
            pid, child_socket = taken
        if make is None:  # with make, the child answers once its env exists
            _send(conn, {"ok": True, "pid": pid, "socket": Path(child_socket).name})
        return pid, child_socket
    except Exception as exc:  # a bad request, or a module that fails to import
        _send(conn, error_reply(exc))
        return 0, ""
    finally:
        for fd in fds:
            os.close(fd)


def _child(listener, conn, lifeline: int, child_socket: str, make: dict | None) -> None:
    """In the forked child: become an ordinary server on `child_socket` (answering the fork
    request on `conn` with its first env when the request has `make`); never returns."""
    os.dup2(lifeline, 0)
    handed = None if make is None else (conn, make)
    _become_server(listener, None if handed else conn, child_socket,
                   lambda: serve(child_socket, exit_on_stdin_close=True, handed=handed))


def _become_server(listener, conn, child_socket: str, run) -> None:
    """In a forked child: drop the zygote's sockets (and `conn`, unless None), die with the
    zygote, call `run`; never returns."""
    code = 1
    try:
        # SIGTERM when the zygote dies (even kill -9): the child shuts down, removing its sockets.
        die_with_parent(signal.SIGTERM)
        fresh_global_rngs()  # not the zygote's RNG state, which every sibling shares
        listener.close()
        if conn is not None:
            conn.close()

        def stop_early(signum, frame):
            # Until serve() installs its own handlers, a stop must still remove our sockets.
            remove_socket_files(child_socket)
            os._exit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, stop_early)
        run()  # exits the process itself
        code = 0
    except BaseException:

        traceback.print_exc()
    finally:
        os._exit(code)


def _spare(listener, control: socket.socket, child_socket: str, premake: dict | None) -> None:
    """In a spare: listen on `child_socket` now (and make the env `premake` names); serve once
    the zygote sends the lifeline of the request it is handed to, with that request's
    connection and env when it has `make` (exit, removing the sockets, if it never does).
    Never returns."""
    def activate(done):
        while not done.is_set():
            if not select.select([control], [], [], 0.2)[0]:
                continue
            message, ancillary, _, _ = control.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(2 * 4))
            fds = [fd for level, kind, payload in ancillary
                   if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                   for fd in array.array("i", payload[: len(payload) - len(payload) % 4])]
            control.close()
            if not message.startswith(b"go") or len(fds) != (1 if message == b"go" else 2):
                for fd in fds:
                    os.close(fd)
                return False  # discarded by the zygote
            os.dup2(fds[0], 0)
            os.close(fds[0])
            if message == b"go":
                return True
            return socket.socket(fileno=fds[1]), json.loads(message[2:])
        return False

    _become_server(listener, None, child_socket,
                   lambda: serve(child_socket, exit_on_stdin_close=True, activate=activate,
                                 premake=premake))


def _send(conn: socket.socket, answer: dict) -> None:
    with contextlib.suppress(OSError):  # the host gave up; a child dies with its lifeline
        conn.sendall((json.dumps(answer) + "\n").encode())


def _reap(children: dict[int, str]) -> None:
    """Collect exited children; remove the sockets of one that was killed before it could."""
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            remove_socket_files(children.pop(pid))


def _stop_children(children: dict[int, str], grace: float = 3.0) -> None:
    """SIGTERM (a child shuts down cleanly, removing its sockets), SIGKILL after `grace`."""
    def send(sig: int) -> int:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return len(children)

    def gone() -> bool:
        _reap(children)
        return not children

    terminate_then_kill(send, gone, grace)
    for pid in list(children):  # not reaped yet even after SIGKILL: wait for it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        remove_socket_files(children.pop(pid))
