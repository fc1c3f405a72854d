"""Length-prefixed frames over a stream socket: the lean data channel that carries reset/step.

Pyro5 carries control calls (create, spaces, render, close); every env step instead costs one
frame each way here, which keeps the per-step overhead near a plain socketpair's.
"""

from __future__ import annotations

import socket
import struct

# Appended to the control socket's path to name the data socket next to it.
DATA_SUFFIX = ".data"
# The Pyro5 object id of the RemoteRunnerServer on the control socket.
RUNNER_OBJECT_ID = "dacbench_remote.runner"

_LENGTH = struct.Struct("<Q")
# Refuse absurd lengths from a confused peer instead of trying to allocate them.
MAX_FRAME = 1 << 34


class ChannelClosed(ConnectionError):
    """The peer closed the connection (or died) before a whole frame arrived."""


def send_frame(sock: socket.socket, body: bytes | bytearray | memoryview | list) -> None:
    """Send one frame: 8-byte little-endian length, then the body (one buffer or a list of them).

    A list goes out with one sendmsg (no joining copy); a partial send finishes with sendall.
    """
    parts = body if isinstance(body, list) else [body]
    total = sum(memoryview(part).nbytes for part in parts)
    if total > MAX_FRAME:
        raise ValueError(f"frame of {total} bytes exceeds the {MAX_FRAME}-byte limit")
    buffers = [_LENGTH.pack(total), *parts]
    sent = sock.sendmsg(buffers)
    if sent < total + _LENGTH.size:
        sock.sendall(b"".join(bytes(memoryview(b).cast("B")) for b in buffers)[sent:])


def recv_frame(sock: socket.socket) -> bytearray:
    """Receive one frame body; raises ChannelClosed on EOF, socket.timeout on deadline."""
    header = _recv_exact(sock, _LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ChannelClosed(f"peer announced a frame of {length} bytes; the stream is corrupt")
    return _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, length: int) -> bytearray:
    buffer = bytearray(length)
    view = memoryview(buffer)
    received = 0
    while received < length:
        count = sock.recv_into(view[received:], length - received)
        if count == 0:
            raise ChannelClosed("connection closed by peer")
        received += count
    return buffer
