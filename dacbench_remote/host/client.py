"""A connection to a server, and the gymnasium.Env facade the agent holds (RemoteEnvironmentClient)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium
import Pyro5.api
import Pyro5.errors

from .._sys.sockets import DATA_SUFFIX
from ..errors import (
    CallTimeout,
    ConnectionBroken,
    DacbenchRemoteError,
    EnvironmentClosed,
    ServerCrashed,
    VersionMismatch,
)
from ..wire import codec
from ..wire.channel import (
    MID_FRAME,
    RUNNER_OBJECT_ID,
    SENDING,
    ChannelClosed,
    DataChannel,
    OutOfStep,
    SocketChannel,
)
from ..wire.dacvalues import lower, restore
from ..wire.replies import error_from_payload

# The host always has gymnasium: its types join the codec's tables now, once per process, not
# on the first space a forked trial worker decodes.
codec.spaces.register()

DEFAULT_CALL_TIMEOUT = 300.0
# Names of the arguments of data-channel requests, for error messages.
_ARGUMENT_NAMES = {"step": ("action",), "reset": ("seed", "options")}


def unwrap_reply(reply: dict) -> Any:
    """The decoded value of a control call's ok reply; raises the exception an error reply names."""
    if reply.get("ok"):
        return codec.decode(reply["value"])
    raise error_from_payload(reply["error"])


class ServerConnection:
    """One connection to a RemoteRunnerServer: handshake, then create environments."""

    def __init__(
        self,
        socket_path: str | Path,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        handshake_timeout: float | None = None,
        describe_crash: Callable[[], str] | None = None,
        facts: dict | None = None,
    ):
        """`facts`: the server's handshake facts when they came another way (a forked server's
        answer, host.forked_env.fork_with_env): then nothing is sent until the first call."""
        self.socket_path = str(socket_path)
        self.timeout = timeout
        # Called when the server vanishes, to add its exit status and output to the error.
        self.describe_crash = describe_crash or (lambda: "")
        self._lock = threading.Lock()
        self._proxy = self.proxy(RUNNER_OBJECT_ID)
        if facts is None:
            # A server that is still starting must not hold the first call for the whole deadline.
            self._proxy._pyroTimeout = handshake_timeout or timeout
            facts = self.call(self._proxy, "hello", codec.WIRE_VERSION)
            self._proxy._pyroTimeout = timeout
        self.server_facts: dict = facts
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
        """A control call with a deadline: the decoded value of the server's ok reply.

        Raises CallTimeout past the deadline, ServerCrashed when the server is gone, and for an
        error reply the class its kind names (errors.ERROR_KINDS).
        """
        try:
            with self._lock:
                proxy._pyroClaimOwnership()  # proxies belong to a thread; close() may run in another
                try:
                    reply = getattr(proxy, method)(*args)
                except SystemExit:  # SIGTERM mid-call: Pyro5 drops the connection on Ctrl-C only,
                    proxy._pyroRelease()  # and the late reply would fail the next call
                    raise
        except Pyro5.errors.TimeoutError as exc:
            raise CallTimeout(
                f"{method}() got no answer within {self.timeout:g} s from the server at "
                f"{self.socket_path}; raise call_timeout if the benchmark is this slow"
            ) from exc
        except (Pyro5.errors.CommunicationError, OSError) as exc:
            raise self.crashed(method, exc) from exc
        return unwrap_reply(reply)

    def release(self, proxy: Pyro5.api.Proxy) -> None:
        """Close `proxy`'s connection (from any thread)."""
        with self._lock:
            proxy._pyroClaimOwnership()
            proxy._pyroRelease()

    def open_channel(self) -> DataChannel:
        """A new connection to the server's data socket; raises ServerCrashed if it is gone."""
        try:
            return SocketChannel.connect(self.socket_path + DATA_SUFFIX, self.timeout)
        except OSError as exc:
            raise self.crashed("connect", exc) from exc

    def crashed(self, during: str, cause: BaseException) -> ServerCrashed:
        """The error for a server that went away during `during`(), with its exit and output."""
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

    def call_function(self, target: str, inputs: dict | None = None) -> Any:
        """Call `module:function` inside the server's image with `inputs` as keyword arguments;
        its return value comes back type for type (the experiments' `run` step).

        Raises:
            UnknownBenchmark: no such module or function in the image. RemoteError: the
            function raised (with its traceback). UnsendableResult: it returned a value the
            wire cannot carry.
        """
        return self.call(self._proxy, "call_function", target, codec.encode(inputs or {}))

    def make_benchmark_env(self, description: dict) -> RemoteEnvironmentClient:
        """Create the environment of a DACBench benchmark object (`describe_benchmark`'s tree)."""
        created = self.call(self._proxy, "make_benchmark_env", description)
        return RemoteEnvironmentClient(self, created["env_id"], created["uri"])

    def make_vector_part(self, count: int, autoreset_mode: str, target: str | None,
                         config: Any = None, kwargs: dict | None = None,
                         description: dict | None = None) -> RemoteEnvironmentClient:
        """`count` envs stepped together in the server (one share of a RemoteVectorEnv)."""
        created = self.call(self._proxy, "make_vector_env", count, autoreset_mode, target,
                            codec.encode(config), codec.encode(kwargs or {}),
                            None if description is None else codec.encode(description))
        return RemoteEnvironmentClient(self, created["env_id"], created["uri"])

    def start_baseline(self, request: dict) -> str:
        """Start a run of DACBench's baseline in the server (host.baselines); returns its id."""
        return self.call(self._proxy, "start_baseline", codec.encode(request))["job_id"]

    def wait_baseline(self, job_id: str, seconds: float) -> dict:
        """The run's state after at most `seconds`: done (with its result) or episodes so far;
        raises what the run raised."""
        return self.call(self._proxy, "wait_baseline", job_id, seconds)

    def cancel_baseline(self, job_id: str) -> None:
        """Stop the run at its next step."""
        self.call(self._proxy, "cancel_baseline", job_id)

    def close_env(self, env_id: str) -> None:
        """Close the env `env_id` in the server; raises what its close() raised (RemoteError)."""
        self.call(self._proxy, "close_env", env_id)

    def shutdown(self) -> None:
        """Ask the server to exit (used by the runner before it reaps the process)."""
        self.call(self._proxy, "shutdown")

    def close(self) -> None:
        """Close the control connection (the server keeps running)."""
        self.release(self._proxy)


class RemoteEnvironmentClient(gymnasium.Env):
    """A gymnasium.Env whose reset/step run in a server, returning exactly what the real env returns.

    Observations, rewards and infos come back with the same Python types, numpy dtypes and
    shapes as in-process. An exception inside the env is raised here as RemoteError (with the
    remote traceback); a server that dies raises ServerCrashed; a call past its deadline raises
    CallTimeout; any call after close() raises EnvironmentClosed.

    `connection` carries the control calls (`proxy`, `call`, `release`, `close_env`, `crashed`,
    `timeout`) and opens the data channel (`open_channel`): a ServerConnection, or a stand-in
    that reaches a server in the same process.
    """

    def __init__(self, connection: ServerConnection, env_id: str, uri: str,
                 prepared: tuple[dict, DataChannel] | None = None):
        """`prepared`: the env's description and its data channel, greeted already (a forked
        server's first env, host.forked_env.fork_with_env); control calls then go through
        that channel too, and no Pyro5 connection is made."""
        self.connection = connection
        self.env_id = env_id
        self._closed = False
        self._broken: DacbenchRemoteError | None = None
        self._control = connection.proxy(uri)
        self._control_on_channel = prepared is not None
        if prepared is None:
            info = connection.call(self._control, "info")
        else:
            info, self._channel = prepared
        self.observation_space = info["observation_space"]
        self.action_space = info["action_space"]
        self.metadata = info["metadata"]
        self.render_mode = info["render_mode"]
        self.spec = gymnasium.envs.registration.EnvSpec.from_json(info["spec"]) if info["spec"] else None
        if prepared is None:
            self._channel: DataChannel = connection.open_channel()
            try:
                self._exchange(["hello"], frame={"env": env_id})
            except BaseException:
                self._channel.close()
                raise
        # With restarts on (RemoteRunner(restart_crashed=True)): a function that recreates this
        # env in a new server when its server died, and the last observation, which ends the
        # episode that was in flight.
        self._replace: Callable[[], RemoteEnvironmentClient] | None = None
        self._last_observation: Any = None
        self._remote_ready = True  # from now on, unknown public attributes are the remote env's

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        """Reset the remote env.

        Args:
            seed: passed to the env's reset (the server also seeds `random` and numpy's global
                RNG with it, for benchmarks that use those).
            options: passed to the env's reset.

        Returns:
            (observation, info) exactly as the env returned them: same types, dtypes, shapes.

        Raises:
            RemoteError: the env raised (with the remote traceback). TypeError: an argument
            that cannot be sent (nothing was sent). ServerCrashed, CallTimeout,
            ConnectionBroken, EnvironmentClosed: see dacbench_remote.errors. (With the
            runner's restart_crashed, a dead server is replaced and the reset retried once.)
        """
        super().reset(seed=seed)  # keeps self.np_random seeded as gymnasium's checker expects
        try:
            result = self._exchange(["reset", seed, options])
        except ServerCrashed:
            if self._replace is None:
                raise
            self._rebind(self._replace())
            result = self._exchange(["reset", seed, options])  # once; a second crash raises
        self._last_observation = result[0]
        return result

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the remote env with `action`.

        Returns:
            (observation, reward, terminated, truncated, info) exactly as the env returned them.

        Raises:
            RemoteError: the env raised (a wrong action, say), with the remote traceback; the
            env stays usable. TypeError, ServerCrashed, CallTimeout, ConnectionBroken,
            EnvironmentClosed: as for reset(). With the runner's restart_crashed, a dead
            server is not raised: the env is made again in a new server and this step ends
            the episode (the last observation, 0.0, False, True, crash_info()).
        """
        try:
            result = self._exchange(["step", action])
        except ServerCrashed:
            if self._replace is None:
                raise
            # The episode in flight is lost with its server: it ends here, truncated, and the
            # next reset() starts one in the new server.
            self._rebind(self._replace())
            return self._last_observation, 0.0, False, True, crash_info()
        self._last_observation = result[0]
        return result

    def render(self) -> Any:
        """The env's render() result (e.g. an rgb_array frame), through the control channel."""
        self._check_open("render")
        return self._control_call("render")

    # -- DACBench's environment interface (AbstractEnv), answered by the remote env -----------

    def get_inst_id(self) -> Any:
        """The id of the instance in use (DACBench's Logger records it)."""
        return self.call_remote("get_inst_id")

    def set_inst_id(self, inst_id: Any) -> None:
        """Choose the instance by id for the next episode."""
        return self.call_remote("set_inst_id", inst_id)

    def get_instance_set(self) -> Any:
        """The current instance set (dict of id to instance)."""
        return self.call_remote("get_instance_set")

    def set_instance_set(self, inst_set: Any) -> None:
        """Replace the instance set."""
        return self.call_remote("set_instance_set", inst_set)

    def get_instance(self) -> Any:
        """The instance in use."""
        return self.call_remote("get_instance")

    def set_instance(self, instance: Any) -> None:
        """Use `instance` for the next episode."""
        return self.call_remote("set_instance", instance)

    def use_next_instance(self, instance: Any = None, instance_id: Any = None, scheme: Any = None
                          ) -> None:
        """Move on to the next instance (DACBench's schedule, or the one given)."""
        return self.call_remote("use_next_instance", instance, instance_id, scheme)

    def use_test_set(self) -> None:
        """Switch the env to its test instance set."""
        return self.call_remote("use_test_set")

    def use_training_set(self) -> None:
        """Switch the env back to its training instance set."""
        return self.call_remote("use_training_set")

    def seed(self, seed: int | None = None, seed_action_space: bool = False) -> Any:
        """DACBench's seed(): seeds the remote env; with seed_action_space, this action space too."""
        result = self.call_remote("seed", seed, seed_action_space)
        if seed_action_space:
            self.action_space.seed(seed)  # agents sample the local copy of the space
        return result

    def call_remote(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the remote env's public method `name`; arguments and result cross exactly."""
        self._check_open(name)
        arguments = codec.encode(lower(list(args)), root=f"{name}() arguments")
        keywords = codec.encode(lower(kwargs), root=f"{name}() keyword arguments")
        return restore(self._control_call("call", name, arguments, keywords))

    def __getattr__(self, name: str) -> Any:
        """Attributes the remote env has and this client lacks (`instance`, `c_step`, ...)."""
        if name.startswith("_") or "_remote_ready" not in self.__dict__:
            raise AttributeError(name)
        self._check_open(name)
        found = self._control_call("get_attr", name)
        if found.get("callable"):
            return functools.partial(self.call_remote, name)
        return restore(found["value"])

    def __setattr__(self, name: str, value: Any) -> None:
        """New public attributes go to the remote env, as DACBench's wrappers expect."""
        local = ("_remote_ready" not in self.__dict__ or name.startswith("_")
                 or name in self.__dict__ or hasattr(type(self), name))
        if local:
            object.__setattr__(self, name, value)
            return
        self._check_open(name)
        self._control_call("set_attr", name, codec.encode(lower(value), root=name))

    def close(self) -> None:
        """Close the remote env and the connection; safe to call more than once.

        Raises RemoteError when the env's own close() raised and ServerCrashed when the server
        is gone; the environment counts as closed either way.
        """
        if self._closed:
            return
        if self._control_on_channel:
            try:
                if self._broken is None:
                    self._control_call("close")
            finally:
                self._closed = True
                self._channel.close()
            return
        self._closed = True
        self._channel.close()
        try:
            # A crashed server has nothing left to close; a timed-out env is still stuck in its
            # call and would only time out again: the runner stops such a server instead.
            if self._broken is None:
                # One call that unregisters the env even when its close() raises.
                self.connection.close_env(self.env_id)
        finally:
            self.connection.release(self._control)

    def _control_call(self, method: str, *args: Any) -> Any:
        """A control call of this env's (RemoteEnvironmentServer's `method`): through Pyro5, or
        on the data channel for a prepared env."""
        if self._control_on_channel:
            return unwrap_reply(self.receive_reply(method, self._send(["control", method,
                                                                        *args])))
        return self.connection.call(self._control, method, *args)

    def _rebind(self, replacement: RemoteEnvironmentClient) -> None:
        """Drive `replacement`'s remote env from now on (made in a new server after a crash)."""
        old_connection, old_control, old_channel = self.connection, self._control, self._channel
        self.connection, self.env_id = replacement.connection, replacement.env_id
        self._control, self._channel = replacement._control, replacement._channel
        self._control_on_channel = replacement._control_on_channel
        self._broken = None
        old_channel.close()
        with contextlib.suppress(Exception):  # the dead server's proxy
            old_connection.release(old_control)

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise EnvironmentClosed(f"{operation}() on a closed remote environment")
        if self._broken is not None:
            raise self._broken

    # -- the data channel, for RemoteVectorEnv (reset and step above go through it too) ------

    def exchange(self, request: list) -> Any:
        """Send one data-channel request (`["step", action]`, `["reset", seed, options]`, ...)
        and return its reply's value; raises as reset() and step() do."""
        return self._exchange(request)

    def send_request(self, request: list) -> int:
        """Send one data-channel request without waiting for the reply; returns the number to
        pass to `receive_reply`. A vector env sends to all its servers before it waits for any."""
        return self._send(request)

    def receive_reply(self, operation: str, seq: int) -> Any:
        """Wait for the reply to request `seq` (an `operation` request) and return its value, or
        raise its error."""
        ok, value = self._guarded(operation,
                                  lambda: codec.decode_message(self._channel.receive(seq)))
        if ok:
            return value
        raise error_from_payload(value)

    def stop_polling(self) -> None:
        """Wait for replies by blocking at once, without polling first: polling only pays while
        the server and this process each have a core of their own."""
        waiter = getattr(self._channel, "waiter", None)  # in-process channels never wait
        if waiter is not None:
            waiter.spin = 0.0

    # Where the data channel's last exchange stands (channel.IDLE, SENDING, ...).
    _phase = property(lambda self: self._channel.phase)

    def _exchange(self, request: list, frame: Any = None) -> Any:
        return self.receive_reply(request[0], self._send(request, frame))

    def _send(self, request: list, frame: Any = None) -> int:
        """Send `request` (or `frame` in its place: the greeting), checking the env is usable."""
        operation = request[0]
        self._check_open(operation)
        if self._channel.phase in MID_FRAME:  # interrupted before the handler below recorded it
            self._broken = self._cut_mid_frame("an earlier call")
            raise self._broken
        body = _encode_request(request if frame is None else frame)  # TypeError: nothing sent
        return self._guarded(operation, self._channel.send, body)

    def _guarded(self, operation: str, function: Callable, *args: Any) -> Any:
        """Run a send or receive step, turning deadlines, crashes and interrupts into state."""
        try:
            return function(*args)
        except (TimeoutError, BlockingIOError) as exc:  # the kernel deadline passed (EAGAIN)
            # The env is still stuck in the call; its next call would only time out as well.
            self._broken = CallTimeout(
                f"{operation}() got no answer within {self.connection.timeout:g} s; the "
                "environment is unusable now (raise call_timeout if the benchmark is this slow)"
            )
            raise self._broken from exc
        except (ChannelClosed, OSError) as exc:
            self._broken = self.connection.crashed(operation, exc)
            raise self._broken from exc
        except OutOfStep as exc:
            self._broken = ConnectionBroken(
                f"the server answered request {exc.answered} while request {exc.expected} was "
                f"the last one sent; the connection to environment {self.env_id} is out of step. "
                "Close this environment and make a new one; please report this as a bug"
            )
            raise self._broken from None
        except BaseException:  # Ctrl-C, or SIGTERM turned into SystemExit, mid-call
            if self._phase in MID_FRAME:
                self._broken = self._cut_mid_frame(f"{operation}()")
            raise

    def _cut_mid_frame(self, call: str) -> ConnectionBroken:
        """The error for an env whose call was interrupted with half a frame in the stream."""
        half = "request half sent" if self._phase == SENDING else "reply half received"
        return ConnectionBroken(
            f"{call} was interrupted with its {half}; the connection to environment "
            f"{self.env_id} cannot be resynchronised. Close this environment and make a new "
            "one (or start a new RemoteRunner)"
        )


def crash_info() -> dict:
    """The info of a step that ended its episode because the env's server died (and was
    replaced: RemoteRunner(restart_crashed=True))."""
    return {"dacbench_remote": {"crashed": True}}


def _encode_request(request: list | dict) -> list:
    """The frame body of a data-channel request.

    An argument that cannot cross raises TypeError naming it and the path inside it, before
    anything is sent, so the environment stays usable.
    """
    try:
        return codec.encode_message(request)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{_argument_problem(request, exc)}; nothing was sent, the environment "
                        "is unchanged") from None


def _argument_problem(request: list | dict, error: Exception) -> str:
    """The codec's message for the first argument that cannot cross, rooted at its name."""
    if isinstance(request, list):
        names = _ARGUMENT_NAMES.get(request[0], ())
        for name, value in zip(names, request[1:], strict=False):
            try:
                codec.encode(value, root=f"{request[0]}() {name}")
            except (TypeError, ValueError) as exc:
                return str(exc)
    return str(error)
