"""The Pyro5 objects of the server process: RemoteRunnerServer creates and lists environments and
answers the version handshake; a RemoteEnvironmentServer controls one environment.

Control calls (create, spaces, render, close) arrive through Pyro5 on the control socket;
reset/step arrive as frames on the data socket (data_channel), answered by `handle` here.
Environments come from envs; DACBench's baselines run as jobs next to them (baselines).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from typing import Any

import Pyro5.api
import Pyro5.server

from .. import __version__
from ..errors import EnvironmentClosed, NoSuchAttribute, ProtocolError, VersionMismatch
from ..wire import codec
from ..wire.benchmarks import rebuild_benchmark
from ..wire.dacvalues import lower, restore
from ..wire.replies import error_payload, error_reply
from .baselines import BaselineJob
from .batched import BatchedEnvs
from .envs import (
    create_env,
    environment_of,
    first_seed,
    import_target,
    seed_global_rngs,
)

Pyro5.api.config.SERIALIZER = "json"
# Control calls are few: one thread waits for them, and the pool grows while several run.
Pyro5.api.config.THREADPOOL_SIZE_MIN = 1


def _ok(value, root: str = "value") -> dict:
    return {"ok": True, "value": codec.encode(value, root=root)}


# ---------------------------------------------------------------------------------------------
# Pyro5 objects


@Pyro5.api.expose
class RemoteEnvironmentServer:
    """One environment: control calls via Pyro5 here, reset/step via `handle` on the data channel."""

    def __init__(self, env_id: str, env):
        self.env_id = env_id
        self.env = env
        # Pyro5's thread pool and the data channel thread may both touch the env.
        self.lock = threading.Lock()
        self.closed = False

    def info(self) -> dict:
        """Spaces, metadata, render mode and spec, encoded for the wire (or an error reply)."""
        return self._call(self._describe, root="the environment's description")

    def _describe(self) -> dict:
        spec = getattr(self.env, "spec", None)
        try:
            spec_json = _portable_spec_json(spec) if spec is not None else None
        except Exception:  # specs holding non-JSON kwargs cannot travel; the client gets None
            spec_json = None
        return {
            "observation_space": self.env.observation_space,
            "action_space": self.env.action_space,
            "metadata": dict(getattr(self.env, "metadata", {}) or {}),
            "render_mode": getattr(self.env, "render_mode", None),
            "spec": spec_json,
        }

    def render(self) -> dict:
        """The env's render() result, encoded (or an error reply)."""
        return self._call(self.env.render, root="render() result")

    # DACBench's env interface beyond gymnasium (instance sets, train/test split, seed, c_step):
    # public attributes and methods of the env, values lowered through `dacvalues`.
    def get_attr(self, name: str) -> dict:
        """The attribute's value, or {"callable": True} for a method (called through call)."""
        def read():
            value = self._attribute(name)
            return {"callable": True} if callable(value) else {"value": lower(value)}
        return self._call(read)

    def set_attr(self, name: str, value_tree: Any) -> dict:
        """Set the env's public attribute `name` (where its wrappers keep it); ok or an error."""
        def write():
            _check_public(name)
            _set_attribute(self.env, name, restore(codec.decode(value_tree)))
        return self._call(write)

    def call(self, name: str, args_tree: Any, kwargs_tree: Any) -> dict:
        """Call the env's public method `name` with decoded arguments; the result is lowered."""
        def invoke():
            method = self._attribute(name)
            if not callable(method):
                raise TypeError(f"{name!r} of the environment is not callable")
            args = restore(codec.decode(args_tree))
            kwargs = restore(codec.decode(kwargs_tree))
            return lower(method(*args, **kwargs))
        return self._call(invoke)

    def _attribute(self, name: str) -> Any:
        _check_public(name)
        getter = getattr(self.env, "get_wrapper_attr", None)  # gymnasium >= 1.0 wrappers
        try:
            return getter(name) if getter is not None else getattr(self.env, name)
        except AttributeError:
            raise NoSuchAttribute(f"the environment has no attribute {name!r}") from None

    def close(self, wait: float = -1) -> dict:
        """Close the env; with `wait` >= 0, give up if a call stuck in the env holds it that long.

        Returns the control reply: ok, or the error the env's close() raised (a TimeoutError
        when it gave up waiting).
        """
        if not self.lock.acquire(timeout=wait):
            return error_reply(TimeoutError(f"environment {self.env_id} is stuck in a call; "
                                            "not closed"))
        try:
            if self.closed:
                return _ok(None)
            self.closed = True
        finally:
            self.lock.release()
        return self._call(self.env.close)

    def _call(self, function, *args, root: str = "value") -> dict:
        """The control reply for `function(*args)`: its encoded value, or what went wrong."""
        with self.lock:
            try:
                value = function(*args)
            except Exception as exc:
                return error_reply(exc)
            try:
                return _ok(value, root)
            except Exception as exc:  # a value the wire cannot carry; the codec names where
                return error_reply(exc, "encode")

    # The control calls a data channel may carry as `["control", METHOD, *ARGS]` (a forked
    # server's env, whose host has no Pyro5 connection): answered with the control reply.
    CHANNEL_CONTROL = ("info", "render", "get_attr", "set_attr", "call", "close")

    # Data channel: one request in, one reply out (data_channel frames them).
    def handle(self, request: list) -> list:
        """[True, result] of the env's reset or step (or a control call's reply), or [False,
        error payload]; never raises."""
        op = request[0]
        try:
            if op == "control":  # not under the lock: the control calls take it themselves
                if request[1] not in self.CHANNEL_CONTROL:
                    raise ProtocolError(f"no control call {request[1]!r} on the data channel")
                return [True, getattr(self, request[1])(*request[2:])]
            with self.lock:
                if self.closed:
                    raise EnvironmentClosed(f"environment {self.env_id} is closed")
                if op == "step":
                    return [True, self.env.step(request[1])]
                if op == "reset":
                    seed_global_rngs(first_seed(request[1]))
                    return [True, self.env.reset(seed=request[1], options=request[2])]
            raise ProtocolError(f"unknown data-channel operation {op!r}")
        except Exception as exc:
            return [False, error_payload(exc)]


@Pyro5.api.expose
class RemoteRunnerServer:
    """Creates, lists and closes environments; answers the version handshake."""

    def __init__(self, daemon: Pyro5.server.Daemon, on_shutdown):
        self.daemon = daemon
        self.environments: dict[str, RemoteEnvironmentServer] = {}
        self.baselines: dict[str, BaselineJob] = {}
        self._on_shutdown = on_shutdown

    def hello(self, client_wire_version: int) -> dict:
        """Version handshake: the server's facts (wire and package version, python, pid).

        A client of another wire version gets a "version" error reply naming both.
        """
        facts = {
            "wire_version": codec.WIRE_VERSION,
            "server_version": __version__,
            "python": sys.version.split()[0],
            "pid": os.getpid(),
        }
        if client_wire_version != codec.WIRE_VERSION:
            message = (
                f"wire format mismatch: client speaks version {client_wire_version}, server "
                f"(dacbench-remote {__version__}) speaks version {codec.WIRE_VERSION}; use "
                "matching dacbench-remote versions on the host and in the image"
            )
            return error_reply(VersionMismatch(message), **facts)
        return _ok(facts)

    def make_env(self, target: str, config_tree: Any = None, kwargs_tree: Any = None) -> dict:
        """Create an environment from `target` (see envs.create_env).

        Returns its id and Pyro5 URI, or an error reply (UnknownBenchmark, BadConfig, or what
        the benchmark raised).
        """
        return self._register(lambda: create_env(target, codec.decode(config_tree),
                                                 codec.decode(kwargs_tree) or {}))

    def make_benchmark_env(self, description_tree: Any) -> dict:
        """Create the environment of a DACBench benchmark object the host described."""
        def build():
            description = codec.decode(description_tree)
            return environment_of(rebuild_benchmark(description))
        return self._register(build)

    def make_vector_env(self, count: int, autoreset_mode: str, target: str | None,
                        config_tree: Any = None, kwargs_tree: Any = None,
                        description_tree: Any = None) -> dict:
        """Create `count` envs stepped together (see batched); returns id and URI, or an
        error reply (BadConfig for what the image or the arguments cannot serve)."""
        def make_one():
            if description_tree is not None:
                return environment_of(rebuild_benchmark(codec.decode(description_tree)))
            return create_env(target, codec.decode(config_tree), codec.decode(kwargs_tree) or {})

        return self._register(lambda: BatchedEnvs(make_one, count, autoreset_mode))

    def call_function(self, target: str, inputs_tree: Any = None) -> dict:
        """Call `module:function` here, inside the image, with the decoded inputs as keyword
        arguments (the experiments' `run` step): its return value, encoded, or an error reply
        (UnknownBenchmark when there is no such function, what it raised otherwise)."""
        try:
            function = import_target(target)
            if not callable(function):
                raise ProtocolError(f"{target} is not a function")
            value = function(**(codec.decode(inputs_tree) or {}))
        except Exception as exc:
            return error_reply(exc)
        try:
            return _ok(value, "the function's result")
        except Exception as exc:  # a value the wire cannot carry; the codec names where
            return error_reply(exc, "encode")

    def _register(self, build) -> dict:
        try:
            env = build()
        except Exception as exc:  # UnknownBenchmark and BadConfig keep their kind
            return error_reply(exc)
        env_id = uuid.uuid4().hex[:12]
        server = RemoteEnvironmentServer(env_id, env)
        uri = self.daemon.register(server, objectId=f"env.{env_id}")
        self.environments[env_id] = server
        return {"ok": True, "value": {"env_id": env_id, "uri": str(uri)}}

    def close_env(self, env_id: str, wait: float = -1) -> dict:
        """Unregister and close the env `env_id` (see RemoteEnvironmentServer.close); an unknown
        id is already closed."""
        server = self.environments.pop(env_id, None)
        if server is None:
            return _ok(None)
        self.daemon.unregister(server)
        return server.close(wait)

    # DACBench's baselines: a run (one seed) is a job in the server, followed by the host.
    def start_baseline(self, request_tree: Any) -> dict:
        """Start one run of DACBench's baseline (see baselines.run_baseline); returns its id."""
        try:
            job = BaselineJob(codec.decode(request_tree))
        except Exception as exc:
            return error_reply(exc)
        job_id = uuid.uuid4().hex[:12]
        self.baselines[job_id] = job
        job.start()
        return _ok({"job_id": job_id})

    def wait_baseline(self, job_id: str, seconds: float) -> dict:
        """Wait up to `seconds` (at most 30) for the run to end: {"done": False, "episodes": N
        finished so far}, or once it ended {"done": True, "result": ...} (its error reply if it
        failed; either way it is forgotten then)."""
        job = self.baselines.get(job_id)
        if job is None:
            return error_reply(ProtocolError(f"no baseline run {job_id!r} in this server"))
        job.wait(max(0.0, min(float(seconds), 30.0)))
        if not job.done:
            return _ok({"done": False, "episodes": job.episodes_done})
        self.baselines.pop(job_id, None)
        if job.error is not None:
            return error_reply(job.error)
        try:
            return _ok({"done": True, "episodes": job.episodes_done, "result": job.result},
                       root="the baseline's result")
        except Exception as exc:
            return error_reply(exc, "encode")

    def cancel_baseline(self, job_id: str) -> dict:
        """Stop the run at its next step and forget it (an unknown id has already ended)."""
        job = self.baselines.pop(job_id, None)
        if job is not None:
            job.discard()
        return _ok(None)

    def discard_baselines(self) -> None:
        """Stop every run and remove its logs (the server is shutting down)."""
        for job_id in list(self.baselines):
            self.cancel_baseline(job_id)

    def list_envs(self) -> list[str]:
        """The ids of the open environments."""
        return list(self.environments)

    def shutdown(self) -> dict:
        """Stop serving; the process exits shortly after answering."""
        threading.Timer(0.05, self._on_shutdown).start()  # after this reply has gone out
        return _ok(None)


def _portable_spec_json(spec) -> str:
    """`spec.to_json()` that the host's EnvSpec.from_json reads whatever its gymnasium version."""
    return json.dumps(codec.portable_spec_fields(json.loads(spec.to_json())))


def _set_attribute(env, name: str, value: Any) -> None:
    """Set `name` where the env's wrappers keep it, like gymnasium 1.x's set_wrapper_attr.

    gymnasium 0.29 has no set_wrapper_attr: there the attribute goes to the outermost wrapper
    that has it in its own instance dict, else to the innermost env.
    """
    setter = getattr(env, "set_wrapper_attr", None)
    if setter is not None:
        setter(name, value)
        return
    target = env
    while name not in vars(target) and target is not getattr(target, "unwrapped", target):
        target = target.env
    setattr(target, name, value)


def _check_public(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise NoSuchAttribute(f"{name!r} is not a public attribute name")
