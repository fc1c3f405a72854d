"""Numbered, length-prefixed frames over a stream socket: the data channel that carries reset/step.

Pyro5 carries control calls (create, spaces, render, close); every env step instead costs one
frame each way here, which keeps the per-step overhead near a plain socketpair's. The client
holds its end as a `DataChannel`: a `SocketChannel`, or a `LoopbackChannel` in one process.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Protocol

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


# Where a client's channel stands, for the next call after an interrupt (see SocketChannel).
IDLE, SENDING, WAITING, READING = "idle", "sending", "waiting", "reading"
MID_FRAME = (SENDING, READING)


class ChannelClosed(ConnectionError):
    """The peer closed the connection (or died) before a whole frame arrived."""


class OutOfStep(Exception):
    """A reply to a request later than the last one sent arrived: the stream cannot be trusted."""

    def __init__(self, answered: int, expected: int):
        super().__init__(f"reply to request {answered} while {expected} was the last one sent")
        self.answered, self.expected = answered, expected


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


# -- the client's end ---------------------------------------------------------------------------


class DataChannel(Protocol):
    """The client's end of a data connection: numbered request bodies out, their replies in.

    `phase` (IDLE, SENDING, WAITING, READING) says where the last exchange stands, so that a
    client interrupted mid-call knows whether the stream is still at a frame boundary.
    """

    phase: str

    def send(self, body: list) -> int:
        """Send one request body (codec buffers); returns its sequence number."""

    def receive(self, seq: int) -> bytearray:
        """The reply body to request `seq`; raises OutOfStep, ChannelClosed or OSError."""

    def close(self) -> None:
        """Close this end; the server sees the connection go."""


class SocketChannel:
    """A DataChannel over a connected UNIX stream socket, with kernel deadlines.

    `phase` records where an interrupt can land: while WAITING the stream is at a frame
    boundary, so the next call skips the late reply; SENDING or READING means half a frame.
    Each phase is set before the step it names starts, so an interrupt between two steps is
    counted in the more harmful phase, never the other way round.
    """

    phase = IDLE

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.waiter = FrameWaiter()
        self.seq = 0  # the number of the last request sent; only the reply carrying it is ours

    @classmethod
    def connect(cls, path: str, deadline: float) -> SocketChannel:
        """Connect to the data socket at `path`; each send and receive may take `deadline` s.

        Raises OSError when nothing listens there.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            set_kernel_deadline(sock, deadline)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def send(self, body: list) -> int:
        """Send a request frame; returns its sequence number (the stream is then WAITING)."""
        self.phase = SENDING
        self.seq += 1
        seq = self.seq
        send_frame(self.sock, body, seq)
        self.phase = WAITING
        return seq

    def receive(self, seq: int) -> bytearray:
        """The body of the reply to request `seq`, skipping late replies to earlier ones.

        Raises OutOfStep for a reply to a later request, ChannelClosed when the server is gone
        and BlockingIOError when the deadline passes.
        """
        while True:
            self.waiter.wait(self.sock)  # consumes nothing: the long wait is interruptible
            self.phase = READING
            answered, reply = recv_frame(self.sock)
            self.phase = WAITING
            if answered == seq:
                self.phase = IDLE
                return reply
            if answered > seq:
                raise OutOfStep(answered, seq)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class LoopbackChannel:
    """A DataChannel to a server end in this process: `answer` turns a request body into the
    reply's buffers (server.data_channel.DataSession.answer), so no socket and no thread is involved.

    Bodies still cross as bytes, so the codec and framing are exercised as over a socket.
    """

    phase = IDLE

    def __init__(self, answer: Callable[[bytearray], list]):
        self.answer = answer
        self.seq = 0
        self.replies: dict[int, bytearray] = {}
        self.closed = False

    def send(self, body: list) -> int:
        """Answer the request at once; returns its sequence number."""
        if self.closed:
            raise ChannelClosed("the loopback channel is closed")
        self.seq += 1
        self.replies[self.seq] = _joined(self.answer(_joined(body)))
        return self.seq

    def receive(self, seq: int) -> bytearray:
        """The reply to request `seq` (ChannelClosed once closed)."""
        if self.closed:
            raise ChannelClosed("the loopback channel is closed")
        return self.replies.pop(seq)

    def close(self) -> None:
        """Refuse further requests."""
        self.closed = True


def set_kernel_deadline(sock: socket.socket, seconds: float) -> None:
    """Deadline for each send/recv enforced by the kernel (SO_RCVTIMEO/SO_SNDTIMEO).

    Python's own socket timeouts add a poll(2) before every call; on the per-step path that
    costs more than the step of a small env. An expired deadline surfaces as BlockingIOError.
    """
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _joined(buffers: list) -> bytearray:
    return bytearray().join(memoryview(buffer).cast("B") for buffer in buffers)
