"""The host side: a connection to a server, and the gymnasium.Env facade the agent holds."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium
import Pyro5.api
import Pyro5.errors

from . import codec
from .channel import DATA_SUFFIX, RUNNER_OBJECT_ID, ChannelClosed, recv_frame, send_frame
from .errors import (
    BadConfig,
    CallTimeout,
    DacbenchRemoteError,
    RemoteError,
    ServerCrashed,
    UnknownBenchmark,
    VersionMismatch,
)

DEFAULT_CALL_TIMEOUT = 300.0


def error_from_payload(payload: dict) -> DacbenchRemoteError:
    """Turn a server's error payload into the matching host-side exception."""
    kind = payload.get("kind")
    message = payload.get("message", "")
    if kind == "unknown_benchmark":
        return UnknownBenchmark(message)
    if kind == "bad_config":
        return BadConfig(message)
    if kind == "version":
        return VersionMismatch(message)
    return RemoteError(payload.get("type", "Exception"), message, payload.get("traceback", ""))


class ServerConnection:
    """One connection to a RemoteRunnerServer: handshake, then create environments."""

    def __init__(
        self,
        socket_path: str | Path,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        handshake_timeout: float | None = None,
        describe_crash: Callable[[], str] | None = None,
    ):
        self.socket_path = str(socket_path)
        self.timeout = timeout
        # Called when the server vanishes, to add its exit status and output to the error.
        self.describe_crash = describe_crash or (lambda: "")
        self._lock = threading.Lock()
        self._proxy = self.proxy(RUNNER_OBJECT_ID)
        # A server that is still starting must not hold the first call for the whole deadline.
        self._proxy._pyroTimeout = handshake_timeout or timeout
        self.server_facts: dict = self.call(self._proxy, "hello", codec.WIRE_VERSION)
        self._proxy._pyroTimeout = timeout
        if self.server_facts.get("wire_version") != codec.WIRE_VERSION:
            raise VersionMismatch(
                f"wire format mismatch: client speaks version {codec.WIRE_VERSION}, server "
                f"speaks version {self.server_facts.get('wire_version')}; use matching "
                "dacbench-remote versions on the host and in the image"
            )

    def proxy(self, object_id_or_uri: str) -> Pyro5.api.Proxy:
        """A proxy for an object of this server, always through the socket we connected to.

        URIs the server hands out name its socket path as seen inside the container, which
        may differ from the host path; only the object id is taken from them.
        """
        object_id = object_id_or_uri
        if object_id.startswith("PYRO:"):
            object_id = object_id.removeprefix("PYRO:").partition("@")[0]
        proxy = Pyro5.api.Proxy(f"PYRO:{object_id}@./u:{self.socket_path}")
        proxy._pyroSerializer = "json"
        proxy._pyroTimeout = self.timeout
        return proxy

    def call(self, proxy: Pyro5.api.Proxy, method: str, *args: Any) -> Any:
        """A control call with a deadline; unwraps the server's ok/error envelope."""
        try:
            with self._lock:
                proxy._pyroClaimOwnership()  # proxies belong to a thread; close() may run in another
                reply = getattr(proxy, method)(*args)
        except Pyro5.errors.TimeoutError as exc:
            raise CallTimeout(
                f"{method}() got no answer within {self.timeout:g} s from the server at "
                f"{self.socket_path}; raise call_timeout if the benchmark is this slow"
            ) from exc
        except (Pyro5.errors.CommunicationError, OSError) as exc:
            raise self.crashed(method, exc) from exc
        if reply.get("ok"):
            return codec.decode(reply["value"])
        raise error_from_payload(reply["error"])

    def crashed(self, during: str, cause: BaseException) -> ServerCrashed:
        detail = self.describe_crash()
        return ServerCrashed(
            f"the server at {self.socket_path} went away during {during}() ({cause}); it "
            "crashed or was killed" + (f"\n{detail}" if detail else "")
        )

    def make_env(self, target: str, config: Any = None, kwargs: dict | None = None
                 ) -> RemoteEnvironmentClient:
        """Create an environment in the server and return the local env that drives it."""
        created = self.call(self._proxy, "make_env", target, codec.encode(config),
                            codec.encode(kwargs or {}))
        return RemoteEnvironmentClient(self, created["env_id"], created["uri"])

    def close_env(self, env_id: str) -> None:
        self.call(self._proxy, "close_env", env_id)

    def shutdown(self) -> None:
        """Ask the server to exit (used by the runner before it reaps the process)."""
        self.call(self._proxy, "shutdown")

    def close(self) -> None:
        with self._lock:
            self._proxy._pyroClaimOwnership()
            self._proxy._pyroRelease()


def _set_kernel_deadline(sock: socket.socket, seconds: float) -> None:
    """Deadline for each send/recv enforced by the kernel (SO_RCVTIMEO/SO_SNDTIMEO).

    Python's own socket timeouts add a poll(2) before every call; on the per-step path that
    costs more than the step of a small env. An expired deadline surfaces as BlockingIOError.
    """
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class RemoteEnvironmentClient(gymnasium.Env):
    """A gymnasium.Env whose reset/step run in a server, returning exactly what the real env returns.

    Observations, rewards and infos come back with the same Python types, numpy dtypes and
    shapes as in-process. An exception inside the env is raised here as RemoteError (with the
    remote traceback); a server that dies raises ServerCrashed; a call past its deadline raises
    CallTimeout.
    """

    def __init__(self, connection: ServerConnection, env_id: str, uri: str):
        self.connection = connection
        self.env_id = env_id
        self._closed = False
        self._broken: DacbenchRemoteError | None = None
        self._control = connection.proxy(uri)
        info = connection.call(self._control, "info")
        self.observation_space = info["observation_space"]
        self.action_space = info["action_space"]
        self.metadata = info["metadata"]
        self.render_mode = info["render_mode"]
        self.spec = gymnasium.envs.registration.EnvSpec.from_json(info["spec"]) if info["spec"] else None
        self._data = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _set_kernel_deadline(self._data, connection.timeout)
        try:
            self._data.connect(connection.socket_path + DATA_SUFFIX)
            self._request(["hello"], frame={"env": env_id})
        except OSError as exc:
            self._data.close()
            raise connection.crashed("connect", exc) from exc

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        """Reset the remote env; returns (observation, info) exactly as the env returned them."""
        super().reset(seed=seed)  # keeps self.np_random seeded as gymnasium's checker expects
        return self._request(["reset", seed, options])

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the remote env; returns (observation, reward, terminated, truncated, info)."""
        return self._request(["step", action])

    def render(self) -> Any:
        """The env's render() result (e.g. an rgb_array frame), through the control channel."""
        self._check_open("render")
        return self.connection.call(self._control, "render")

    def close(self) -> None:
        """Close the remote env and the connection; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._data.close()
        try:
            # A crashed server has nothing left to close; a timed-out env is still stuck in its
            # call and would only time out again: the runner stops such a server instead.
            if self._broken is None:
                self.connection.call(self._control, "close")
                self.connection.close_env(self.env_id)
        finally:
            with self.connection._lock:
                self._control._pyroClaimOwnership()
                self._control._pyroRelease()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise DacbenchRemoteError(f"{operation}() on a closed remote environment")
        if self._broken is not None:
            raise self._broken

    def _request(self, request: list, frame: Any = None) -> Any:
        self._check_open(request[0])
        try:
            send_frame(self._data, codec.encode_message(request if frame is None else frame))
            ok, value = codec.decode_message(recv_frame(self._data))
        except (TimeoutError, BlockingIOError) as exc:  # the kernel deadline passed (EAGAIN)
            # The reply may still come later and would desynchronise the stream: stop here.
            self._broken = CallTimeout(
                f"{request[0]}() got no answer within {self.connection.timeout:g} s; the "
                "environment is unusable now (raise call_timeout if the benchmark is this slow)"
            )
            raise self._broken from exc
        except (ChannelClosed, OSError) as exc:
            self._broken = self.connection.crashed(request[0], exc)
            raise self._broken from exc
        if ok:
            return value
        raise error_from_payload(value)
