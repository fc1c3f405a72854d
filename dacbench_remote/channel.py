"""Numbered, length-prefixed frames over a stream socket: the data channel that carries reset/step.

Pyro5 carries control calls (create, spaces, render, close); every env step instead costs one
frame each way here, which keeps the per-step overhead near a plain socketpair's.
"""

from __future__ import annotations

import os
import socket
import struct
import time

# Appended to the control socket's path to name the data socket next to it.
DATA_SUFFIX = ".data"
# The Pyro5 object id of the RemoteRunnerServer on the control socket.
RUNNER_OBJECT_ID = "dacbench_remote.runner"

# Every frame starts with its body length and a sequence number: a request's number, which its
# reply repeats, so a client whose call was interrupted can tell a late reply from the one it wants.
_HEADER = struct.Struct("<QQ")
# Refuse absurd lengths from a confused peer instead of trying to allocate them.
MAX_FRAME = 1 << 34
# MSG_PEEK copies one byte here and consumes nothing; the contents are never read.
_PEEK_SCRATCH = bytearray(1)
_PEEK_NOW = socket.MSG_PEEK | socket.MSG_DONTWAIT
SPIN_ENV = "DACBENCH_REMOTE_SPIN_US"
DEFAULT_SPIN_US = 200


class ChannelClosed(ConnectionError):
    """The peer closed the connection (or died) before a whole frame arrived."""


def send_frame(sock: socket.socket, body: bytes | bytearray | memoryview | list, seq: int = 0
               ) -> None:
    """Send one frame: 16-byte header (body length, `seq`, little endian), then the body.

    The body is one buffer or a list of them; a list goes out with one sendmsg (no joining
    copy), and a partial send finishes with sendall.
    """
    parts = body if isinstance(body, list) else [body]
    total = sum(memoryview(part).nbytes for part in parts)
    if total > MAX_FRAME:
        raise ValueError(f"frame of {total} bytes exceeds the {MAX_FRAME}-byte limit")
    buffers = [_HEADER.pack(total, seq), *parts]
    sent = sock.sendmsg(buffers)
    if sent < total + _HEADER.size:
        sock.sendall(b"".join(bytes(memoryview(b).cast("B")) for b in buffers)[sent:])


def recv_frame(sock: socket.socket) -> tuple[int, bytearray]:
    """Receive one frame: (its sequence number, its body).

    Raises ChannelClosed on EOF and socket.timeout (or BlockingIOError, with a kernel
    deadline) when the deadline passes.
    """
    header = _recv_exact(sock, _HEADER.size)
    length, seq = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ChannelClosed(f"peer announced a frame of {length} bytes; the stream is corrupt")
    return seq, _recv_exact(sock, length)


def wait_for_frame(sock: socket.socket, spin: float = 0.0) -> bool:
    """Block until the peer has sent something, without consuming it.

    With `spin` > 0, first poll without blocking for up to that many seconds: a peer that
    answers within it is seen without the scheduler's wake-up latency. Returns whether it did.
    An interrupt (Ctrl-C) while blocked here leaves the stream at a frame boundary, which is
    what lets a client skip a late reply later; raises ChannelClosed on EOF.
    """
    if spin > 0:
        deadline = time.perf_counter() + spin
        while True:
            try:
                if sock.recv_into(_PEEK_SCRATCH, 1, _PEEK_NOW) == 0:
                    raise ChannelClosed("connection closed by peer")
                return True
            except BlockingIOError:
                if time.perf_counter() > deadline:
                    break
    if sock.recv_into(_PEEK_SCRATCH, 1, socket.MSG_PEEK) == 0:
        raise ChannelClosed("connection closed by peer")
    return False


class FrameWaiter:
    """Waits for the next frame on one connection, polling first while that pays off.

    A wake-up from a blocking receive costs tens of microseconds on a VM, as much as a whole
    step of a small env. So each wait first polls for up to `spin` seconds; a peer that does not
    answer within it (a slow step, a thinking agent, too few cores) makes the following waits
    block at once, for 1, 2, 4, ... up to 64 waits, so a slow peer costs little CPU.
    """

    def __init__(self, spin: float | None = None):
        self.spin = default_spin() if spin is None else spin
        self._skip = self._penalty = 0

    def wait(self, sock: socket.socket) -> None:
        if self.spin <= 0 or self._skip:
            self._skip = max(0, self._skip - 1)
            wait_for_frame(sock)
        elif wait_for_frame(sock, self.spin):
            self._penalty = 0
        else:
            self._skip = self._penalty = min(2 * self._penalty or 1, 64)


def default_spin() -> float:
    """Seconds a wait polls before it blocks: $DACBENCH_REMOTE_SPIN_US microseconds (0: never)."""
    try:
        return max(0.0, float(os.environ.get(SPIN_ENV, DEFAULT_SPIN_US))) / 1e6
    except ValueError:
        return DEFAULT_SPIN_US / 1e6


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
