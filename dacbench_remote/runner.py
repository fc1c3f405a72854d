"""RemoteRunner: image → runtime → server → connection → episodes → results, then clean up."""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .agents import make_agent
from .channel import DATA_SUFFIX
from .client import DEFAULT_CALL_TIMEOUT, RemoteEnvironmentClient, ServerConnection
from .errors import CallTimeout, DacbenchRemoteError, ServerCrashed, StartupTimeout
from .runtimes.base import Runtime, ServerProcess
from .sockets import new_socket_path


@dataclass
class EpisodeResult:
    """One finished episode, as written (one JSON line each) to the results file."""

    episode: int
    seed: int
    return_: float
    length: int
    wall_time: float
    terminated: bool
    truncated: bool
    provenance: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        record = asdict(self)
        record["return"] = record.pop("return_")
        provenance = record.pop("provenance")
        return {**provenance, **record}


class RemoteRunner:
    """Runs a benchmark in a server (subprocess or rootless container) and episodes against it.

    >>> with RemoteRunner("gymnasium:CartPole-v1") as runner:
    ...     results = runner.run("random", number_of_episodes=3, seed=0)

    `benchmark` is a DACBench benchmark name (`Luby`), `gymnasium:ID`, or `module:attr` naming a
    DACBench benchmark class or an env factory. `config` is a DACBench config (dict of keys to
    override, or the JSON text of `to_json()`); `kwargs` go to gymnasium.make or the factory.
    """

    def __init__(
        self,
        benchmark: str,
        *,
        config: dict | str | None = None,
        kwargs: dict | None = None,
        runtime: str | Runtime = "local",
        experiment: str | None = None,
        image: str | Path | None = None,
        python: str | None = None,
        binds: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
        gpu: bool = False,
        build: bool = False,
        results_path: str | Path | None = None,
        startup_timeout: float = 60.0,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ):
        self.benchmark = benchmark
        self.config = config
        self.kwargs = dict(kwargs or {})
        self.runtime_spec = runtime
        self.experiment = experiment
        self.image = Path(image) if image else None
        self.python = python
        self.binds = tuple(binds)
        self.env = dict(env or {})
        self.gpu = gpu
        self.build = build
        self.results_path = Path(results_path) if results_path else None
        self.startup_timeout = startup_timeout
        self.call_timeout = call_timeout
        self.image_provenance: dict = {}
        self.runtime: Runtime | None = None
        self.server: ServerProcess | None = None
        self.connection: ServerConnection | None = None
        self._environments: list[RemoteEnvironmentClient] = []
        self.startup_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and connect; raises StartupTimeout/ServerCrashed with its output."""
        if self.server is not None:
            return
        self.runtime = self._make_runtime()
        started = time.monotonic()
        self.server = self.runtime.start(new_socket_path())
        atexit.register(self.close)
        _stop_on_sigterm()
        try:
            self.connection = self._connect(started + self.startup_timeout)
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - started

    def close(self) -> None:
        """Close environments, stop the server, remove its sockets; safe to call twice."""
        atexit.unregister(self.close)
        environments, self._environments = self._environments, []
        for environment in environments:
            environment.close()
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()

    def __enter__(self) -> RemoteRunner:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _make_runtime(self) -> Runtime:
        if isinstance(self.runtime_spec, Runtime):
            return self.runtime_spec
        from .runtimes import auto_runtime_name, make_runtime

        name = auto_runtime_name() if self.runtime_spec == "auto" else self.runtime_spec
        if name == "local":
            return make_runtime("local", python=self.python, env=self.env)
        image = self.image or self._resolve_image()
        return make_runtime(name, image=image, binds=self.binds, env=self.env, gpu=self.gpu)

    def _resolve_image(self) -> Path:
        """The cached, verified image for this benchmark and experiment (fetched or built)."""
        from .errors import UnknownBenchmark
        from .images.resolve import resolve_image

        try:
            path, self.image_provenance = resolve_image(self.benchmark, self.experiment,
                                                        build=self.build)
        except UnknownBenchmark as exc:
            raise UnknownBenchmark(
                f"{exc}. To run it in a container anyway, name an image that contains it "
                "(image=PATH / --image PATH), or add it to a catalog directory"
            ) from exc
        return path

    def _connect(self, deadline: float) -> ServerConnection:
        assert self.server is not None
        control = self.server.socket_path
        data = Path(str(control) + DATA_SUFFIX)
        last_problem = "the socket was never created"
        while True:
            if not self.server.alive():
                raise ServerCrashed(
                    f"the server exited during startup ({self._crash_details()})"
                )
            if control.exists() and data.exists():
                try:
                    return ServerConnection(
                        control,
                        timeout=self.call_timeout,
                        handshake_timeout=max(0.5, min(5.0, deadline - time.monotonic())),
                        describe_crash=self._crash_details,
                    )
                except (ServerCrashed, CallTimeout) as exc:
                    last_problem = str(exc).splitlines()[0]
            if time.monotonic() > deadline:
                raise StartupTimeout(
                    f"the server ({self.server.runtime.name} runtime) did not answer within "
                    f"{self.startup_timeout:.0f} s on {control}: {last_problem}. Raise "
                    f"startup_timeout for slow machines. Its output so far:\n"
                    f"{self.server.output_tail() or '(none)'}"
                )
            time.sleep(0.02)

    def _crash_details(self) -> str:
        server = self.server
        if server is None:
            return ""
        server.wait_gone(1.0)  # the socket closes a moment before the process is reaped
        code = server.process.poll()
        status = "still running" if code is None else f"exit code {code}"
        return f"{status}; last output:\n{server.output_tail() or '(none)'}"

    # -- environments and episodes -----------------------------------------------------------

    def get_environment(self) -> RemoteEnvironmentClient:
        """A new remote environment for this benchmark (a gymnasium.Env); closed with the runner."""
        self.start()
        assert self.connection is not None
        environment = self.connection.make_env(self.benchmark, self.config, self.kwargs)
        self._environments.append(environment)
        return environment

    def provenance(self, seed: int, run_id: str, agent: str) -> dict:
        """What a results line records so that the run can be repeated exactly."""
        runtime = self.runtime.describe() if self.runtime else {"runtime": str(self.runtime_spec)}
        image = self.image_provenance
        return {
            "run_id": run_id,
            "benchmark": self.benchmark,
            "config": self.config,
            "kwargs": self.kwargs or None,
            "agent": agent,
            "experiment": image.get("experiment", self.experiment),
            "image": image.get("image"),
            "image_sha256": image.get("sha256"),
            "image_origin": image.get("origin"),
            "dacbench": image.get("dacbench"),
            **runtime,
            "dacbench_remote_version": __version__,
            "base_seed": seed,
        }

    def run(self, agent: Any, number_of_episodes: int, seed: int = 0) -> list[EpisodeResult]:
        """Run episodes with DACBench's agent protocol; episode i resets with seed + i.

        `agent` is an object with act/train/end_episode, or a spec for `make_agent` ("random",
        "static", "module:factory"). Each finished episode is appended to `results_path` as one
        complete JSON line.
        """
        if number_of_episodes < 1:
            raise DacbenchRemoteError(f"number_of_episodes must be at least 1, got {number_of_episodes}")
        environment = self.get_environment()
        agent_name = agent if isinstance(agent, str) else _qualified_name(agent)
        if isinstance(agent, str):
            agent = make_agent(agent, environment, seed)
        provenance = self.provenance(seed, uuid.uuid4().hex[:12], agent_name)
        results = []
        for episode in range(number_of_episodes):
            result = run_episode(environment, agent, episode, seed + episode)
            result.provenance = provenance
            results.append(result)
            if self.results_path is not None:
                append_jsonl(self.results_path, result.to_record())
        return results


def run_episode(environment, agent, episode: int, seed: int) -> EpisodeResult:
    """One episode with DACBench's loop: act → step → train until done, then end_episode."""
    started = time.perf_counter()
    state, _ = environment.reset(seed=seed)
    reward: Any = 0
    total, length = 0.0, 0
    terminated = truncated = False
    while not (terminated or truncated):
        action = agent.act(state, reward)
        state, reward, terminated, truncated, _ = environment.step(action)
        agent.train(state, reward)
        total += float(reward)
        length += 1
    agent.end_episode(state, reward)
    return EpisodeResult(episode, seed, total, length, time.perf_counter() - started,
                         bool(terminated), bool(truncated))


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line with a single write(2) on an O_APPEND file: a crash never leaves half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=_jsonable) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
    finally:
        os.close(fd)


def _qualified_name(agent: Any) -> str:
    cls = type(agent)
    return f"{cls.__module__}:{cls.__qualname__}"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `with` blocks and atexit stop servers (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)
