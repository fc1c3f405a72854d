"""The host's side of a zygote server (see server/zygote.py): start one in any runtime, and ask it
for freshly forked child servers, each tied to a lifeline pipe the caller holds."""

from __future__ import annotations

import array
import json
import os
import socket
import time
from pathlib import Path

from .._sys.sockets import new_socket_path, socket_answers
from ..errors import ZygoteError, ZygoteUnsupported

# The longest reply line read from a zygote.
MAX_REPLY = 65536


def request_fork(zygote_socket: str | os.PathLike, name: str, preload: list[str] = (),
                 timeout: float = 60.0) -> tuple[Path, int, int]:
    """Ask the zygote on `zygote_socket` (a host path) for a child server named `name`.

    Returns the child's control socket (host path), its pid (in the zygote's pid namespace) and
    the write end of its lifeline pipe: keep that fd open while the child should live.
    """
    request = {"name": name, "preload": list(preload)}
    answer, write_end, conn = send_fork_request(zygote_socket, request, timeout)
    conn.close()
    return Path(zygote_socket).parent / answer["socket"], int(answer["pid"]), write_end


def send_fork_request(zygote_socket: str | os.PathLike, request: dict, timeout: float,
                      max_reply: int = MAX_REPLY) -> tuple[dict, int, socket.socket]:
    """Send a fork request: the ok answer, the lifeline's write end and the open connection
    (host.forked_env's request carries an env to make, and reads a longer answer)."""
    write_end, conn = open_fork_request(zygote_socket, request, timeout)
    return read_fork_answer(zygote_socket, write_end, conn, max_reply), write_end, conn


def open_fork_request(zygote_socket: str | os.PathLike, request: dict,
                      timeout: float) -> tuple[int, socket.socket]:
    """The first half of send_fork_request: send the request, do not wait for the answer.
    Returns the lifeline's write end and the connection the answer comes on (its timeout set);
    the zygote forks (or hands out its spare) meanwhile."""
    read_end, write_end = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(str(zygote_socket))
        body = json.dumps({"op": "fork", **request}) + "\n"
        conn.sendmsg([body.encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [read_end]))])
    except BaseException:
        conn.close()
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return write_end, conn


def read_fork_answer(zygote_socket: str | os.PathLike, write_end: int, conn: socket.socket,
                     max_reply: int = MAX_REPLY) -> dict:
    """The second half of send_fork_request: the zygote's ok answer. Closes the connection and
    the lifeline when it is not ok (ZygoteError) or cannot be read."""
    try:
        reply = _read_line(conn, max_reply)
    except BaseException:
        conn.close()
        os.close(write_end)
        raise
    try:
        answer = json.loads(reply)
    except ValueError:
        answer = {"ok": False, "error": f"unreadable reply {reply[:200]!r}"}
    if not answer.get("ok"):
        conn.close()
        os.close(write_end)
        raise ZygoteError(f"the zygote server on {zygote_socket} could not start a server: "
                          f"{_refusal(answer)}")
    return answer


class WarmServer:
    """A zygote started by any runtime (in its container), handing out forked child servers."""

    def __init__(self, runtime, preload: list[str] = (), startup_timeout: float = 60.0):
        self.runtime, self.preload, self.startup_timeout = runtime, list(preload), startup_timeout
        self.server = None

    def start(self) -> None:
        self.runtime.server_args = ("--zygote",)
        self.server = self.runtime.start(new_socket_path("zyg"))
        deadline = time.monotonic() + self.startup_timeout
        while not socket_answers(self.server.socket_path, timeout=1.0):
            if not self.server.alive():
                output = self.server.output_tail()
                self.stop()
                if "--zygote" in output:
                    raise ZygoteUnsupported(
                        "this image's server has no --zygote (an image built by an older "
                        "dacbench-remote); rebuild it for warm trials. Its output:\n" + output)
                raise ZygoteError(f"the zygote server exited during startup:\n{output}")
            if time.monotonic() > deadline:
                self.stop()
                raise ZygoteError(f"the zygote server did not answer within "
                                  f"{self.startup_timeout:.0f} s")
            time.sleep(0.02)
        self._preload()

    def _preload(self) -> None:
        """Import the benchmark's modules now (an older zygote refuses; its first fork does)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.startup_timeout)
            conn.connect(str(self.server.socket_path))
            conn.sendall((json.dumps({"op": "preload", "preload": self.preload}) + "\n").encode())
            answer = json.loads(_read_line(conn) or b"{}")
        # A zygote older than the preload request refuses it; its first fork imports instead.
        if not answer.get("ok") and "expected a fork request" not in _refusal(answer):
            raise ZygoteError(f"the zygote server could not import {self.preload}: "
                              f"{_refusal(answer)}")

    def fork(self, name: str) -> tuple[Path, int]:
        """A fresh child server: its control socket (host path) and lifeline write fd."""
        if self.server is None:
            self.start()
        child, _pid, lifeline = request_fork(self.server.socket_path, name, self.preload,
                                             timeout=self.startup_timeout)
        return child, lifeline

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()

    def stop(self) -> None:
        """Stop the zygote (its children follow), remove its sockets and mounts."""
        server, self.server = self.server, None
        if server is not None:
            server.stop()


def _read_line(conn: socket.socket, max_reply: int = MAX_REPLY) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n") and len(data) < max_reply:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _refusal(answer: dict) -> str:
    """What a zygote's error reply says: an error payload (wire.replies), or the plain text that
    zygotes of older images answer."""
    error = answer.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', 'Exception')}: {error.get('message', '')}"
    return str(error or "no reason given")
