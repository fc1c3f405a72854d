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
from .zygote_client import send_fork_request

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
    make = {"target": target, "config": codec.encode(config),
            "kwargs": codec.encode(kwargs or {}), "wire_version": codec.WIRE_VERSION}
    request = {"name": name, "preload": list(preload), "make": make, "ahead": ahead}
    answer, lifeline, conn = send_fork_request(zygote_socket, request, timeout, MAX_ENV_REPLY)
    forked = ForkedServer(Path(zygote_socket).parent / answer["socket"], int(answer["pid"]),
                          lifeline)
    if "hello" not in answer:  # an older zygote: it forked, and made no env
        conn.close()
        return forked
    try:
        forked.facts = unwrap_reply(answer["hello"])
        forked.env = unwrap_reply(answer["make_env"])
        forked.info = unwrap_reply(answer["info"])
    except BaseException:
        conn.close()
        os.close(lifeline)
        raise
    forked.channel = conn
    return forked
