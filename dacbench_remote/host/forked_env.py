"""A child server forked from a zygote with its first env made, in one round trip: the client's
half of server/zygote.py's `make` request. Apart from host/zygote_client.py because it needs the
wire codec and the client, which a sweep's driver (it only starts zygotes) does without.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..wire import codec
from .client import unwrap_reply
from .zygote_client import open_fork_request, read_fork_answer

# The longest answer read from a forked server describing its env.
MAX_ENV_REPLY = 64 * 2**20


@dataclass
class ForkedServer:
    """A child server from fork_with_env: keep `lifeline` open while it should live."""

    socket_path: Path  # its control socket (host path)
    pid: int  # in the zygote's pid namespace
    lifeline: int
    # The env made with the fork (None from an older image's zygote, which makes none): its
    # `make_env` value (env_id, uri), its description (`info`'s value), the server's handshake
    # facts, and the connection that is now its data channel.
    env: dict | None = None
    info: dict | None = None
    facts: dict | None = None
    channel: socket.socket | None = None


def fork_with_env(zygote_socket: str | os.PathLike, name: str, preload: list[str],
                  target: str, config=None, kwargs: dict | None = None,
                  timeout: float = 60.0, ahead: bool = False) -> ForkedServer:
    """A child server forked with its first env made, in one round trip (server/zygote.py).
    `ahead`: the next fork request will ask for the same env, so the zygote's next spare
    server makes it ahead, while this one runs.

    Raises what the handshake or make_env raise in a fresh server (VersionMismatch,
    UnknownBenchmark, BadConfig, RemoteError), and ZygoteError when the zygote refuses.
    """
    return request_fork_with_env(zygote_socket, name, preload, target, config, kwargs,
                                 timeout, ahead).result()


def request_fork_with_env(zygote_socket: str | os.PathLike, name: str, preload: list[str],
                          target: str, config=None, kwargs: dict | None = None,
                          timeout: float = 60.0, ahead: bool = False) -> PendingFork:
    """fork_with_env's request, sent without waiting for the answer: `.result()` reads it.
    A sweep's worker host sends it before forking the trial's worker, so the zygote forks
    and makes the env while the worker starts (sweeps/worker.py)."""
    make = {"target": target, "config": codec.encode(config),
            "kwargs": codec.encode(kwargs or {}), "wire_version": codec.WIRE_VERSION}
    request = {"name": name, "preload": list(preload), "make": make, "ahead": ahead}
    lifeline, conn = open_fork_request(zygote_socket, request, timeout)
    return PendingFork(Path(zygote_socket), lifeline, conn)


@dataclass
class PendingFork:
    """A sent fork_with_env request whose answer is not read yet. Its holder holds the
    child's lifeline: read the answer with result(), or close() to let the child go."""

    zygote_socket: Path
    lifeline: int
    conn: socket.socket
    taken: bool = False  # result() or close() was called: the descriptors are not ours

    def result(self) -> ForkedServer:
        """The forked server (raises as fork_with_env does); call it once."""
        if self.taken:
            raise RuntimeError("this fork's answer was read or given up already")
        self.taken = True
        answer = read_fork_answer(self.zygote_socket, self.lifeline, self.conn, MAX_ENV_REPLY)
        forked = ForkedServer(self.zygote_socket.parent / answer["socket"], int(answer["pid"]),
                              self.lifeline)
        if "hello" not in answer:  # an older zygote: it forked, and made no env
            self.conn.close()
            return forked
        try:
            forked.facts = unwrap_reply(answer["hello"])
            forked.env = unwrap_reply(answer["make_env"])
            forked.info = unwrap_reply(answer["info"])
        except BaseException:
            self.conn.close()
            os.close(self.lifeline)
            raise
        forked.channel = self.conn
        return forked

    def close(self) -> None:
        """Close this process's copies of the lifeline and the connection, unless result() took
        them: the child server exits once no process holds its lifeline."""
        if not self.taken:
            self.taken = True
            self.conn.close()
            os.close(self.lifeline)
