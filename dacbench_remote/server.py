"""The process inside the container: hosts benchmarks and environments for remote clients.

Run as `python -m dacbench_remote.server --socket PATH`. Control calls (create, spaces, render,
close) arrive through Pyro5 on PATH; reset/step arrive as frames on PATH + ".data". It imports
only the codec, Pyro5 and what the benchmarks need, because it runs inside minimal images.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import signal
import socket
import sys
import threading
import traceback
import uuid
from typing import Any

import numpy
import Pyro5.api
import Pyro5.server

from . import __version__, codec
from .benchmark_objects import rebuild_benchmark
from .channel import (
    DATA_SUFFIX,
    RUNNER_OBJECT_ID,
    ChannelClosed,
    FrameWaiter,
    recv_frame,
    send_frame,
)
from .dacvalues import lower, restore
from .errors import BadConfig, UnknownBenchmark
from .sockets import remove_socket_files

Pyro5.api.config.SERIALIZER = "json"
# Control calls are few; a handful of threads serve several clients.
Pyro5.api.config.THREADPOOL_SIZE_MIN = 2

class UserFacingError(Exception):
    """A problem with what the client asked for; `kind` maps to the host-side exception."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def error_payload(exc: BaseException, kind: str = "remote") -> dict:
    """What the client needs to re-raise `exc`: its kind, type, message and traceback."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not take the reply (and the connection) with it
        message = f"<{name} whose str() raised>"
    return {
        "kind": getattr(exc, "kind", kind),
        "type": name,
        "message": message,
        "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__)),
    }


# ---------------------------------------------------------------------------------------------
# Global random number generators
#
# Some benchmarks draw from Python's `random` or numpy's legacy global RNG (DACBench 0.5.6's
# CMAES, through modcma and ioh), which `reset(seed=...)` does not touch: seeded here, the same
# experiment and seed give the same trajectory in every server process.

_LEGACY_SEED_LIMIT = 2**32


def seed_global_rngs(seed: Any) -> None:
    """Seed `random` and `numpy.random`'s legacy global RNG with `seed` (an int; None: leave them)."""
    if seed is None:
        return
    seed = int(seed)
    random.seed(seed)
    numpy.random.seed(_legacy_numpy_seed(seed))


def _first_seed(seed: Any) -> Any:
    """The seed for the global RNGs: a vector env's per-env list gives its first non-None one."""
    if isinstance(seed, (list, tuple)):
        return next((item for item in seed if item is not None), None)
    return seed


def _legacy_numpy_seed(seed: int) -> int | list[int]:
    """`numpy.random.seed` takes 0 <= seed < 2**32; larger seeds as 32-bit words, like SeedSequence."""
    if 0 <= seed < _LEGACY_SEED_LIMIT:
        return seed
    magnitude, words = abs(seed), []
    while magnitude:
        words.append(magnitude % _LEGACY_SEED_LIMIT)
        magnitude //= _LEGACY_SEED_LIMIT
    return words


def benchmark_seed(benchmark: Any) -> int | None:
    """The DACBench benchmark's config key `seed` when it is an int, else None."""
    config = getattr(benchmark, "config", None)
    seed = config.get("seed") if hasattr(config, "get") else None
    if isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)):
        return None
    return int(seed)


def environment_of(benchmark: Any):
    """`benchmark.get_environment()`, with the global RNGs seeded by the benchmark's seed first."""
    seed_global_rngs(benchmark_seed(benchmark))
    return benchmark.get_environment()


# ---------------------------------------------------------------------------------------------
# Creating environments from a benchmark description


def create_env(target: str, config: Any = None, kwargs: dict | None = None):
    """Build the env named by `target`: a DACBench benchmark name, `gymnasium:ID`, or `module:attr`."""
    kwargs = dict(kwargs or {})
    if target.startswith("gymnasium:"):
        return _make_gymnasium(target.partition(":")[2], kwargs)
    if ":" in target:
        obj = _import_target(target)
        if isinstance(obj, type) and hasattr(obj, "get_environment"):
            return _from_benchmark_class(obj, config)
        if not callable(obj):
            raise UserFacingError("unknown_benchmark", f"{target} is not callable")
        try:
            return obj(**kwargs) if config is None else obj(config, **kwargs)
        except TypeError as exc:
            raise UserFacingError("bad_config", f"{target}(...) rejected its arguments: {exc}") from exc
    return _from_benchmark_class(_dacbench_class(target), config)


def _make_gymnasium(env_id: str, kwargs: dict):
    import gymnasium

    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        raise UserFacingError(
            "unknown_benchmark", f"gymnasium has no environment {env_id!r}: {exc}"
        ) from exc
    try:
        return gymnasium.make(env_id, **kwargs)
    except TypeError as exc:
        raise UserFacingError("bad_config", f"gymnasium:{env_id} rejected {kwargs}: {exc}") from exc


def _import_target(target: str):
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserFacingError(
                "unknown_benchmark",
                f"cannot import {module_name!r} for benchmark {target!r} in this "
                f"interpreter/image ({sys.executable}): {exc}",
            ) from exc
        raise
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UserFacingError(
            "unknown_benchmark", f"module {module_name!r} has no attribute {attr!r}"
        ) from exc


def _dacbench_class(name: str):
    try:
        import dacbench.benchmarks as benchmarks
    except ModuleNotFoundError as exc:
        raise UserFacingError(
            "unknown_benchmark",
            f"DACBench is not installed where the server runs ({sys.executable}), so benchmark "
            f"{name!r} does not exist here; use an image that contains it",
        ) from exc
    available = sorted(n for n in benchmarks.__all__ if n.endswith("Benchmark"))
    wanted = {name.lower(), name.lower() + "benchmark"}
    for candidate in available:
        if candidate.lower() in wanted:
            return getattr(benchmarks, candidate)
    names = ", ".join(n.removesuffix("Benchmark") for n in available)
    raise UserFacingError(
        "unknown_benchmark", f"unknown DACBench benchmark {name!r}; available here: {names}"
    )


def _from_benchmark_class(cls, config):
    """DACBench: no config → defaults; a dict or JSON text → `from_json` (missing keys default)."""
    try:
        if config is None:
            benchmark = cls()
        else:
            text = config if isinstance(config, str) else json.dumps(config)
            benchmark = cls.from_json(text)
        return environment_of(benchmark)
    except UserFacingError:
        raise
    except Exception as exc:
        if config is None:
            raise
        raise UserFacingError(
            "bad_config", f"{cls.__name__} rejected its config: {type(exc).__name__}: {exc}"
        ) from exc


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
            raise UserFacingError(
                "attribute", f"the environment has no attribute {name!r}"
            ) from None

    def close(self, wait: float = -1) -> dict:
        """Close the env; with `wait` >= 0, give up if a call stuck in the env holds it that long."""
        if not self.lock.acquire(timeout=wait):
            return {"ok": False, "error": {
                "kind": "remote", "type": "TimeoutError", "traceback": "",
                "message": f"environment {self.env_id} is stuck in a call; not closed"}}
        try:
            if self.closed:
                return _ok(None)
            self.closed = True
        finally:
            self.lock.release()
        return self._call(self.env.close)

    def _call(self, function, *args, root: str = "value"):
        try:
            with self.lock:
                return _ok(function(*args), root)
        except Exception as exc:
            return {"ok": False, "error": error_payload(exc)}

    # Data channel: one request frame in, one reply frame out.
    def handle(self, request: list) -> list:
        op = request[0]
        try:
            with self.lock:
                if self.closed:
                    raise UserFacingError("closed", f"environment {self.env_id} is closed")
                if op == "step":
                    return [True, self.env.step(request[1])]
                if op == "reset":
                    seed_global_rngs(_first_seed(request[1]))
                    return [True, self.env.reset(seed=request[1], options=request[2])]
            raise UserFacingError("protocol", f"unknown data-channel operation {op!r}")
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
        """Version handshake; a client of another wire version gets an error naming both."""
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
            return {"ok": False, "error": {**facts, "kind": "version", "type": "VersionMismatch",
                                           "message": message, "traceback": ""}}
        return _ok(facts)

    def make_env(self, target: str, config_tree: Any = None, kwargs_tree: Any = None) -> dict:
        """Create an environment; returns its id and Pyro5 URI."""
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
        """Create `count` envs stepped together (see vector_server); returns id and URI."""
        from .vector_server import BatchedEnvs, VectorRefused

        def make_one():
            if description_tree is not None:
                return environment_of(rebuild_benchmark(codec.decode(description_tree)))
            return create_env(target, codec.decode(config_tree), codec.decode(kwargs_tree) or {})

        def build():
            try:
                return BatchedEnvs(make_one, count, autoreset_mode)
            except VectorRefused as exc:
                raise BadConfig(str(exc)) from None
        return self._register(build)

    def _register(self, build) -> dict:
        try:
            env = build()
        except UserFacingError as exc:
            return {"ok": False, "error": error_payload(exc, exc.kind)}
        except UnknownBenchmark as exc:
            return {"ok": False, "error": error_payload(exc, "unknown_benchmark")}
        except BadConfig as exc:
            return {"ok": False, "error": error_payload(exc, "bad_config")}
        except Exception as exc:
            return {"ok": False, "error": error_payload(exc)}
        env_id = uuid.uuid4().hex[:12]
        server = RemoteEnvironmentServer(env_id, env)
        uri = self.daemon.register(server, objectId=f"env.{env_id}")
        self.environments[env_id] = server
        return {"ok": True, "value": {"env_id": env_id, "uri": str(uri)}}

    def close_env(self, env_id: str, wait: float = -1) -> dict:
        server = self.environments.pop(env_id, None)
        if server is None:
            return _ok(None)
        self.daemon.unregister(server)
        return server.close(wait)

    def list_envs(self) -> list[str]:
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
        raise UserFacingError("attribute", f"{name!r} is not a public attribute name")


def _ok(value, root: str = "value") -> dict:
    return {"ok": True, "value": codec.encode(value, root=root)}


def _answer(server: RemoteEnvironmentServer, payload: bytearray) -> list:
    """The reply frame body for one request frame.

    Every failure becomes an error reply: a dead connection would look like a crashed server.
    """
    try:
        request = codec.decode_message(payload)
        reply = server.handle(request)
    except (Exception, SystemExit) as exc:  # a malformed request, or an env calling sys.exit
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
    return {
        "kind": "remote",
        "type": type(error).__name__,
        "message": f"the environment's {operation}() returned a value that cannot be sent to "
                   f"the host: {error}. Return plain or numpy values there, or convert this one",
        "traceback": "",
    }


# ---------------------------------------------------------------------------------------------
# The data channel


class DataChannelServer:
    """Accepts data connections; each starts with `{"env": id}` and then carries reset/step."""

    def __init__(self, path: str, runner: RemoteRunnerServer):
        self.path = path
        self.runner = runner
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(16)

    def serve_forever(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # listener closed: shutting down
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                server = self._greet(connection)
                waiter = FrameWaiter()
                while server is not None:
                    waiter.wait(connection)
                    seq, payload = recv_frame(connection)
                    send_frame(connection, _answer(server, payload), seq)
            except (ChannelClosed, ConnectionError):
                return

    def _greet(self, connection: socket.socket) -> RemoteEnvironmentServer | None:
        """Read the hello frame; the environment it names, or None after saying why not."""
        seq, payload = recv_frame(connection)
        try:
            hello = codec.decode_message(payload)
        except ValueError:
            hello = None
        env_id = hello.get("env") if isinstance(hello, dict) else None
        server = self.runner.environments.get(env_id)
        if server is None:
            send_frame(connection, codec.encode_message(
                [False, {"kind": "protocol", "type": "KeyError", "traceback": "",
                         "message": f"no environment {env_id!r} on this server"}]), seq)
            return None
        send_frame(connection, codec.encode_message([True, None]), seq)
        return server

    def close(self) -> None:
        self.listener.close()


# ---------------------------------------------------------------------------------------------
# Process entry point


def serve(socket_path: str, *, exit_on_stdin_close: bool = False) -> None:
    """Serve until shutdown(), SIGTERM/SIGINT, or (optionally) until stdin closes."""
    data_path = socket_path + DATA_SUFFIX
    for path in (socket_path, data_path):
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from a crashed server at our own private path
    daemon = Pyro5.server.Daemon(unixsocket=socket_path)
    os.chmod(socket_path, 0o600)
    done = threading.Event()

    runner = RemoteRunnerServer(daemon, done.set)
    daemon.register(runner, objectId=RUNNER_OBJECT_ID)
    data = DataChannelServer(data_path, runner)
    threading.Thread(target=data.serve_forever, daemon=True, name="data-channel").start()
    threading.Thread(target=daemon.requestLoop, args=(lambda: not done.is_set(),), daemon=True,
                     name="pyro5").start()
    if exit_on_stdin_close:
        threading.Thread(target=_wait_for_stdin_close, args=(done,), daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: done.set())
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
            reply = {"ok": False, "error": {"message": f"{type(exc).__name__}: {exc}"}}
        if not reply["ok"]:
            print(f"closing environment {env_id} failed: {reply['error']['message']}",
                  file=sys.stderr)
    # Not Pyro5's daemon.shutdown(): its sleeps and thread joins cost 0.2 s per server, and the
    # process exits right here. Our sockets go, and our private directory when the host made
    # one and can no longer remove it (killed): an empty one would be left in the socket root.
    remove_socket_files(socket_path)
    sys.stderr.flush()
    # Env libraries may leave non-daemon threads behind; they must not keep the server alive.
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
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
        return
    serve(args.socket, exit_on_stdin_close=args.exit_on_stdin_close)


if __name__ == "__main__":
    main()
