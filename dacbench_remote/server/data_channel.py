"""The server's end of the data channel: each connection names its environment in a first frame,
then every reset/step request frame gets one reply frame from that environment's handler."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import ProtocolError
from ..wire import codec
from ..wire.channel import ChannelClosed, FrameWaiter, recv_frame, send_frame
from ..wire.replies import error_payload


class RequestHandler(Protocol):
    """What answers a connection's decoded requests (RemoteEnvironmentServer.handle)."""

    def handle(self, request: list) -> list:
        """[True, result] or [False, error payload]; never raises."""


class DataSession:
    """One data connection's requests and replies, whatever carries the frames.

    The first frame is `{"env": id}`: the environment this connection drives. Every later frame
    is a request for it. A session whose greeting named no environment here is `refused`.
    """

    def __init__(self, environments: Mapping[str, RequestHandler], env_id: str | None = None):
        self.environments = environments
        # Greeted already: a forked server's first env, made while answering the fork request.
        self.handler: RequestHandler | None = environments[env_id] if env_id else None
        self.refused = False

    def answer(self, payload: bytearray) -> list:
        """The reply frame body (codec buffers) for one request frame body; never raises."""
        if self.handler is None:
            return self._greet(payload)
        return answer_request(self.handler, payload)

    def _greet(self, payload: bytearray) -> list:
        try:
            hello = codec.decode_message(payload)
        except ValueError:
            hello = None
        env_id = hello.get("env") if isinstance(hello, dict) else None
        self.handler = self.environments.get(env_id)
        if self.handler is None:
            self.refused = True
            refusal = ProtocolError(f"no environment {env_id!r} on this server")
            return codec.encode_message([False, error_payload(refusal)])
        return codec.encode_message([True, None])


def answer_request(handler: RequestHandler, payload: bytearray) -> list:
    """The reply frame body for one request frame.

    Every failure becomes an error reply: a dead connection would look like a crashed server.
    """
    try:
        request = codec.decode_message(payload)
    except Exception as exc:  # a malformed frame: client and server disagree
        return codec.encode_message([False, error_payload(exc, "protocol")])
    try:
        reply = handler.handle(request)
    except (Exception, SystemExit) as exc:  # a request that is no list, or an env calling sys.exit
        return codec.encode_message([False, error_payload(exc)])
    try:
        return codec.encode_message(reply)
    except (TypeError, ValueError) as exc:  # the env returned something that cannot cross
        return codec.encode_message([False, _unsendable_result(request[0], reply[1], exc)])


def _unsendable_result(operation: str, result: Any, error: Exception) -> dict:
    """The error payload for an env result the codec refuses, naming the place inside it."""
    try:
        codec.encode(result, root=f"{operation}() result")
    except (TypeError, ValueError) as exc:
        error = exc
    return error_payload(
        error.with_traceback(None), "encode",
        message=f"the environment's {operation}() returned a value that cannot be sent to the "
                f"host: {error}. Return plain or numpy values there, or convert this one")


class DataChannelServer:
    """Accepts data connections on a UNIX socket (`accept`, when its listener is readable) and
    serves each in its own thread."""

    def __init__(self, path: str, environments: Mapping[str, RequestHandler]):
        self.path = path
        self.environments = environments
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(16)

    def accept(self) -> None:
        """Accept one waiting connection and serve it."""
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return  # the client gave up already
        threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def serve_connection(self, connection: socket.socket, env_id: str) -> None:
        """Serve `connection`, already connected and greeted, as env `env_id`'s data channel."""
        threading.Thread(target=self._serve, args=(connection, env_id), daemon=True).start()

    def _serve(self, connection: socket.socket, env_id: str | None = None) -> None:
        session = DataSession(self.environments, env_id)
        waiter = FrameWaiter()
        with connection:
            try:
                while not session.refused:
                    waiter.wait(connection)
                    seq, payload = recv_frame(connection)
                    send_frame(connection, session.answer(payload), seq)
            except (ChannelClosed, ConnectionError):
                return

    def close(self) -> None:
        """Stop accepting connections (those open keep being served until their peer goes)."""
        self.listener.close()
