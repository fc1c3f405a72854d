"""The process inside the container: Pyro5 objects that create and control environments, and
the entry point that serves them (`python -m dacbench_remote.server --socket PATH`).

Control calls (create, spaces, render, close) arrive through Pyro5 on PATH; reset/step arrive as
frames on PATH + ".data" (data_server). Environments come from server_envs. It imports only the
codec, numpy, gymnasium, Pyro5 and what the benchmarks need: it runs inside minimal images.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import Pyro5.api
import Pyro5.server

from . import __version__, codec
from .benchmark_objects import rebuild_benchmark
from .channel import DATA_SUFFIX, RUNNER_OBJECT_ID
from .dacvalues import lower, restore
from .data_server import DataChannelServer
from .errors import (
    EnvironmentClosed,
    NoSuchAttribute,
    ProtocolError,
    VersionMismatch,
    error_payload,
)
from .server_envs import (
    benchmark_seed,  # noqa: F401  (tests and scripts import these from here)
    create_env,
    environment_of,
    first_seed,
    seed_global_rngs,
)
from .sockets import remove_socket_files

Pyro5.api.config.SERIALIZER = "json"
# Control calls are few; a handful of threads serve several clients.
Pyro5.api.config.THREADPOOL_SIZE_MIN = 2


def error_reply(exc: BaseException, kind: str | None = None, **extra: Any) -> dict:
    """The control-call reply for a failure: {"ok": False, "error": its payload}.

    The payload's kind (see errors.ERROR_KINDS) comes from `exc`'s class unless `kind` is given.
    """
    return {"ok": False, "error": error_payload(exc, kind, **extra)}


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

    # Data channel: one request in, one reply out (data_server frames them).
    def handle(self, request: list) -> list:
        """[True, result] of the env's reset or step, or [False, error payload]; never raises."""
        op = request[0]
        try:
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
        """Create an environment from `target` (see server_envs.create_env).

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
        """Create `count` envs stepped together (see vector_server); returns id and URI, or an
        error reply (BadConfig for what the image or the arguments cannot serve)."""
        from .vector_server import BatchedEnvs

        def make_one():
            if description_tree is not None:
                return environment_of(rebuild_benchmark(codec.decode(description_tree)))
            return create_env(target, codec.decode(config_tree), codec.decode(kwargs_tree) or {})

        return self._register(lambda: BatchedEnvs(make_one, count, autoreset_mode))

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

    def list_envs(self) -> list[str]:
        """The ids of the open environments."""
        return list(self.environments)

    def shutdown(self) -> None:
        """Stop serving; the process exits shortly after answering."""
        threading.Timer(0.05, self._on_shutdown).start()  # after this reply has gone out


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


# ---------------------------------------------------------------------------------------------
# Process entry point


def serve(socket_path: str, *, exit_on_stdin_close: bool = False,
          activate: Callable[[threading.Event], bool] | None = None) -> None:
    """Serve until shutdown(), SIGTERM/SIGINT, or (optionally) until stdin closes.

    `activate` (a zygote's spare server) is called once the sockets listen, before stdin is
    watched; it returns when the server is handed out (True: its lifeline is now stdin) or
    discarded (False), or when `done` is set (a stop).
    """
    data_path = socket_path + DATA_SUFFIX
    remove_socket_files(socket_path, keep_dir=True)  # a crashed server's, at our private path
    daemon = Pyro5.server.Daemon(unixsocket=socket_path)
    os.chmod(socket_path, 0o600)
    done = threading.Event()

    runner = RemoteRunnerServer(daemon, done.set)
    daemon.register(runner, objectId=RUNNER_OBJECT_ID)
    data = DataChannelServer(data_path, runner.environments)
    threading.Thread(target=data.serve_forever, daemon=True, name="data-channel").start()
    threading.Thread(target=daemon.requestLoop, args=(lambda: not done.is_set(),), daemon=True,
                     name="pyro5").start()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: done.set())
    if activate is not None and not activate(done):
        _shutdown(data, runner, socket_path)  # a spare server that was never handed out
    if exit_on_stdin_close:
        threading.Thread(target=_wait_for_stdin_close, args=(done,), daemon=True).start()
    print(f"dacbench-remote server {__version__} (wire {codec.WIRE_VERSION}) listening on "
          f"{socket_path}", file=sys.stderr, flush=True)
    while not done.wait(0.5):
        pass
    _shutdown(data, runner, socket_path)


def _wait_for_stdin_close(done: threading.Event) -> None:
    """The host holds our stdin open; EOF means it is gone (even after kill -9), so we exit."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    done.set()


def _shutdown(data: DataChannelServer, runner: RemoteRunnerServer, socket_path: str) -> None:
    data.close()
    for env_id in list(runner.environments):
        try:
            # An env stuck in step() holds its lock forever: never let it keep us alive.
            reply = runner.close_env(env_id, wait=1.0)
        except Exception as exc:  # one env failing to close must not keep the others alive
            reply = error_reply(exc)
        if not reply["ok"]:
            error = reply["error"]
            print(f"closing environment {env_id} failed: {error['type']}: {error['message']}",
                  file=sys.stderr)
    # Not Pyro5's daemon.shutdown(): its sleeps and thread joins cost 0.2 s per server, and the
    # process exits right here. Our sockets go, and our private directory when the host made
    # one and can no longer remove it (killed): an empty one would be left in the socket root.
    remove_socket_files(socket_path)
    sys.stderr.flush()
    # Env libraries may leave non-daemon threads behind; they must not keep the server alive.
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """`python -m dacbench_remote.server`: serve on --socket (or run a zygote) until stopped."""
    parser = argparse.ArgumentParser(
        prog="python -m dacbench_remote.server",
        description="Serve benchmarks and environments to dacbench-remote clients over a UNIX "
        "socket (control on PATH, reset/step frames on PATH.data).",
    )
    parser.add_argument("--socket", required=True, help="path of the control socket to create")
    parser.add_argument(
        "--exit-on-stdin-close",
        action="store_true",
        help="exit when standard input reaches EOF (the host's lifeline; set by the runtimes)",
    )
    parser.add_argument(
        "--zygote",
        action="store_true",
        help="serve fork requests instead: each forks a fresh server (see dacbench_remote.zygote)",
    )
    args = parser.parse_args(argv)
    if args.zygote:
        from .zygote import zygote

        zygote(args.socket, exit_on_stdin_close=args.exit_on_stdin_close)
        sys.stderr.flush()
        os._exit(0)  # the benchmark's imports would take a second to finalise, for nothing
    serve(args.socket, exit_on_stdin_close=args.exit_on_stdin_close)


if __name__ == "__main__":
    main()
