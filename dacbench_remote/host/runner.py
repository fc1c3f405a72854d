"""RemoteRunner: image → runtime → server → connection → episodes → results, then clean up."""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import inspect
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .._sys.files import sha256_file
from .._sys.sockets import DATA_SUFFIX, new_socket_path, socket_id_of, socket_path_for_id
from ..config import load_config
from ..errors import (
    BadConfig,
    CallTimeout,
    ServerCrashed,
    StartupTimeout,
    UnknownBenchmark,
)
from ..images.resolve import resolve_image
from ..runtimes import auto_runtime_name, make_runtime
from ..runtimes.base import Runtime, ServerProcess
from ..runtimes.options import RuntimeOptions
from ..wire.baselines import check_available, is_baseline_spec, parse_baseline
from ..wire.benchmarks import benchmark_name, describe_benchmark, is_benchmark_object
from .agents import make_agent
from .baselines import BaselineRun, follow_baseline
from .client import DEFAULT_CALL_TIMEOUT, RemoteEnvironmentClient, ServerConnection, crash_info
from .compat import choose_container, parse_bind_str, parse_env_str
from .results import append_record
from .vector import RemoteVectorEnv, autoreset_value

# Where run() records episodes unless told otherwise (relative to the working directory).
DEFAULT_RESULTS_PATH = Path("results") / "results.jsonl"


@dataclass
class EpisodeResult:
    """One finished episode, as written (one JSON line each) to the results file."""

    episode: int
    seed: int | None
    return_: float
    length: int
    wall_time: float
    terminated: bool
    truncated: bool
    crashed: bool = False  # the server died mid-episode (restart_crashed): ended truncated here
    server_restarts: int = 0  # servers the run had replaced when this episode ended
    instance: Any = None  # DACBench's instance id of the episode (None for other envs)
    provenance: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        record = asdict(self)
        record["return"] = record.pop("return_")
        provenance = record.pop("provenance")
        return {**provenance, **record}


class RemoteRunner:
    """Runs a benchmark in a server inside a rootless container, and episodes against it.

    A drop-in for DACBench's `dacbench.container.remote_runner.RemoteRunner`:

    >>> benchmark = FunctionApproximationBenchmark()
    >>> benchmark.set_seed(42)
    >>> runner = RemoteRunner(benchmark, experiment_identifier="exp:0.01")
    >>> agent = make_my_agent(runner.get_environment())
    >>> runner.run(agent, number_of_episodes=10)    # also appended to runner.results_path

    Args:
        benchmark: a configured DACBench benchmark object (its config, seed and wrappers go
            along), a DACBench name (`"Luby"`), `"gymnasium:ID"`, or `"module:attr"` naming a
            DACBench benchmark class or an env factory.
        container_name: DACBench keyword; the catalog image family the image must come from.
        container_source: DACBench keyword; a local `.sif` path, or a URL the catalog lists
            (so that its sha256 is known and verified).
        container_tag: DACBench keyword; the experiment version (or the tag of a registry
            `container_source`); `"latest"` means the catalog's default.
        env_str: DACBench keyword; `"VAR1=V1,VAR2=V2"` set inside the container.
        bind_str: DACBench keyword; `"src[:dest[:ro|rw]]"`, comma-separated binds.
        gpu: give the container the host's GPUs (`--nv`; Apptainer only, others refuse).
        socket_id: attach to a server that is already running with this id (see
            `runner.socket_id`) instead of starting one; closing then leaves it running.
        experiment_identifier / experiment: the catalog experiment version (`"exp:0.01"`);
            default: the catalog's default version.
        config: for a benchmark *name*: a dict of DACBench config keys, or `to_json()` text.
        kwargs: keyword arguments for `gymnasium.make` or the factory.
        runtime: `"auto"` (Apptainer if installed, else bubblewrap), `"apptainer"`, `"bwrap"`,
            `"local"` (a plain subprocess, no container), or a Runtime; default: the config
            file's `default_runtime` (itself `"auto"` unless set).
        image: a local `.sif` to run instead of the catalog's.
        python: the interpreter of the local runtime.
        binds, env: binds (`src[:dst[:ro|rw]]`) and environment variables for the container.
        build: build the image from its packaged recipe when it can be neither found in the
            cache nor downloaded (default True; False forbids building).
        results_path: JSONL file each episode is appended to (default `results/results.jsonl`
            under the working directory; None records nothing).
        startup_timeout, call_timeout: seconds for the server to answer at start, and per call.
        restart_crashed: when the server dies (killed, segfault, out of memory), start a new
            one with the same image, runtime and settings and make the env(s) again there, as
            RLlib's `restart_failed_sub_environments` does: the episode in flight ends as
            truncated with `info["dacbench_remote"]["crashed"] = True` (a reset is retried
            once on the new server), and `runner.restarts` counts the servers replaced (also in
            every results line: `server_restarts`, per episode `crashed`). Default False: a
            dead server raises ServerCrashed. Not with socket_id (that server is not ours).
        options: all of the runtime settings above (runtime, image, python, binds, env, gpu,
            timeouts) as one RuntimeOptions, as sweeps and repeats pass them; not together
            with those keywords. Its `provenance` (the image's sha256 as the cache verified
            it) is recorded with results instead of hashing the image again.

    Raises:
        BadConfig: keywords that contradict each other or cannot be honoured, a benchmark
            object that cannot be sent. UnknownBenchmark, ImageError, RuntimeUnavailable,
            StartupTimeout, ServerCrashed: from `start()` (also run by get_environment/run).
    """

    def __init__(
        self,
        benchmark: Any,
        container_name: str | None = None,
        container_source: str | Path | None = None,
        container_tag: str = "latest",
        env_str: str | None = "",
        bind_str: str | None = "",
        gpu: bool = False,
        socket_id: str | None = None,
        *,
        experiment_identifier: str | None = None,
        experiment: str | None = None,
        config: dict | str | None = None,
        kwargs: dict | None = None,
        runtime: str | Runtime | None = None,
        image: str | Path | None = None,
        python: str | None = None,
        binds: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
        build: bool = True,
        results_path: str | Path | None = DEFAULT_RESULTS_PATH,
        startup_timeout: float = 60.0,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        options: RuntimeOptions | None = None,
        restart_crashed: bool = False,
    ):
        # The same arguments start the extra servers of get_vector_environment(servers=K).
        self._arguments = {key: value for key, value in locals().items() if key != "self"}
        if options is not None:
            given = _from_options(options, self._arguments)
            runtime, image, python = given["runtime"], given["image"], given["python"]
            binds, env, gpu = given["binds"], given["env"], given["gpu"]
            startup_timeout, call_timeout = given["startup_timeout"], given["call_timeout"]
        # A benchmark object is described (and checked) once, here, as DACBench serialises it.
        self.benchmark_description: dict | None = None
        self._object_record: dict = {}
        if is_benchmark_object(benchmark):
            if config is not None:
                raise BadConfig("config= is for benchmark names; a benchmark object carries "
                                "its own config (edit benchmark.config or call set_seed)")
            self.benchmark_description = describe_benchmark(benchmark)
            self._object_record = _object_provenance(benchmark, self.benchmark_description)
            benchmark = benchmark_name(benchmark)
        elif not isinstance(benchmark, str):
            raise BadConfig(f"benchmark must be a DACBench benchmark object or a name, not "
                            f"{type(benchmark).__name__}")
        choice = choose_container(
            experiment=experiment, experiment_identifier=experiment_identifier, image=image,
            container_name=container_name, container_source=container_source,
            container_tag=container_tag)
        self.benchmark = benchmark
        self.config = config
        self.kwargs = dict(kwargs or {})
        self.runtime_spec = runtime if runtime is not None else load_config().default_runtime
        self.experiment = choice.experiment
        self.image = choice.image
        self.image_source = choice.source
        self.image_family = choice.family
        self.python = python
        self.binds = (*binds, *parse_bind_str(bind_str))
        self.env = {**(env or {}), **parse_env_str(env_str)}
        self.gpu = gpu
        self.build = build
        self.results_path = Path(results_path) if results_path else None
        self.startup_timeout = startup_timeout
        self.call_timeout = call_timeout
        self.attach_to = socket_id
        if socket_id is not None and (choice.image or choice.source or runtime is not None):
            raise BadConfig("socket_id= attaches to a running server; image, container_source "
                            "and runtime belong to the server that is already running")
        if restart_crashed and socket_id is not None:
            raise BadConfig("restart_crashed=True replaces a dead server with a new one; a "
                            "runner attached with socket_id= did not start its server and "
                            "cannot start another")
        self.restart_crashed = bool(restart_crashed)
        self.restarts = 0  # servers replaced after they died (restart_crashed)
        # What the cache said about the image (set by _resolve_image, or known from options).
        self.image_provenance: dict = dict(options.provenance) if options is not None else {}
        self.runtime: Runtime | None = None
        self.server: ServerProcess | None = None
        self.connection: ServerConnection | None = None
        self._environment: RemoteEnvironmentClient | None = None
        self._environments: list[RemoteEnvironmentClient] = []
        self.startup_seconds: float | None = None

    @property
    def socket_id(self) -> str | None:
        """The running server's id: pass it as `socket_id=` to attach another runner to it."""
        if self.attach_to is not None:
            return self.attach_to
        if self.server is None:
            return None
        return socket_id_of(self.server.socket_path)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Fetch the image if needed, start the server and connect; a no-op once started.

        Raises:
            ImageError (ImageNotFound, ChecksumMismatch, BuildError, ...): no verified image.
            RuntimeUnavailable: the runtime or its tools are missing (says what to install).
            StartupTimeout, ServerCrashed: the server did not come up (with its output).
            VersionMismatch: the image's server speaks another wire version.
        """
        if self.server is not None or self.connection is not None:
            return
        if self.attach_to is not None:
            self._attach()
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
        """Close environments, stop the server, remove its sockets; safe to call twice.

        The server is stopped even when closing an environment fails (its close() raised, or
        the server is gone); the first such error is raised afterwards, unless close() runs
        while another exception is propagating: that one wins, and the error is added as a note.
        """
        atexit.unregister(self.close)
        environments, self._environments = self._environments, []
        self._environment = None
        connection, self.connection = self.connection, None
        server, self.server = self.server, None
        failures: list[Exception] = []
        try:
            for environment in environments:
                try:
                    environment.close()
                except Exception as exc:  # the others and the server must still be closed
                    failures.append(exc)
            if connection is not None:
                connection.close()
        finally:
            if server is not None:
                server.stop()
        if not failures:
            return
        in_flight = sys.exc_info()[1]
        if in_flight is None:
            raise failures[0]
        if hasattr(in_flight, "add_note"):  # Python >= 3.11
            for failure in failures:
                in_flight.add_note(f"while closing the runner, an environment's close failed: "
                                   f"{type(failure).__name__}: {failure}")

    def __enter__(self) -> RemoteRunner:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _attach(self) -> None:
        started = time.monotonic()
        self.connection = ServerConnection(socket_path_for_id(self.attach_to),
                                           timeout=self.call_timeout,
                                           handshake_timeout=min(5.0, self.startup_timeout))
        atexit.register(self.close)
        self.startup_seconds = time.monotonic() - started

    def _make_runtime(self) -> Runtime:
        if isinstance(self.runtime_spec, Runtime):
            return self.runtime_spec

        name = auto_runtime_name() if self.runtime_spec == "auto" else self.runtime_spec
        options = dict(binds=self.binds, env=self.env, gpu=self.gpu)
        if name == "local":
            if self.image is not None:
                raise BadConfig("the local runtime runs no image; drop image/container_source "
                                "or choose runtime='bwrap'/'apptainer'/'auto'")
            return make_runtime("local", python=self.python, **options)
        if self.python is not None:
            raise BadConfig(f"python= picks the interpreter of the local runtime; the {name} "
                            "runtime uses the image's own Python")
        image = self.image or self._resolve_image()
        return make_runtime(name, image=image, **options)

    def _resolve_image(self) -> Path:
        """The cached, verified image for this benchmark and experiment (fetched or built)."""

        try:
            path, self.image_provenance = resolve_image(
                self.benchmark, self.experiment, build=self.build, family=self.image_family,
                source=self.image_source)
        except UnknownBenchmark as exc:
            raise UnknownBenchmark(
                f"{exc}. To run it in a container anyway, name an image that contains it "
                "(image=PATH / --image PATH), add it to a catalog directory, or run it without "
                "a container (runtime='local')"
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
        """The runner's environment (a gymnasium.Env); the same object on every call.

        `run()` uses it too, so an agent built from it acts on the env it was built for.
        Closed with the runner.
        """
        if self._environment is None:
            self._environment = self.make_environment()
        return self._environment

    def make_environment(self) -> RemoteEnvironmentClient:
        """An additional, independent environment of this benchmark in the same server.

        Returns:
            A new RemoteEnvironmentClient (closed with the runner).

        Raises:
            UnknownBenchmark, BadConfig: the server could not build the benchmark. And what
            start() raises.
        """
        self.start()
        assert self.connection is not None
        environment = self._make_env(self.connection)
        if self.restart_crashed:
            environment._replace = self._replacer(self._make_env)
        self._environments.append(environment)
        return environment

    def _make_env(self, connection: ServerConnection) -> RemoteEnvironmentClient:
        if self.benchmark_description is not None:
            return connection.make_benchmark_env(self.benchmark_description)
        return connection.make_env(self.benchmark, self.config, self.kwargs)

    def _replacer(self, make: Callable[[ServerConnection], Any]) -> Callable[[], Any]:
        """A function that makes an env again with `make` after its server died: in a new
        server (each server is replaced once, however many of its envs notice)."""
        made_in = self.server

        def replacement() -> Any:
            nonlocal made_in
            if made_in is self.server:
                self._replace_server()
            made_in = self.server
            assert self.connection is not None
            return make(self.connection)

        return replacement

    def _replace_server(self) -> None:
        """Start a new server like the dead one (same runtime, image, settings) and connect."""
        connection, self.connection = self.connection, None
        server, self.server = self.server, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
        if server is not None:
            server.stop()  # reaps it and removes what it left (sockets, mounts)
        assert self.runtime is not None
        started = time.monotonic()
        self.server = self.runtime.start(new_socket_path())
        self.restarts += 1
        self.connection = self._connect(started + self.startup_timeout)
        self.startup_seconds = time.monotonic() - started
        print(f"dacbench-remote: the server of {self.benchmark} died; restarted it "
              f"(restart {self.restarts})", file=sys.stderr)

    def get_vector_environment(self, num_envs: int, *, autoreset_mode: Any = "NextStep",
                               servers: int = 1, restart_crashed: bool | None = None
                               ) -> RemoteVectorEnv:
        """A gymnasium VectorEnv of `num_envs` copies of the benchmark, stepped in batches.

        Args:
            num_envs: how many copies; env i is reset with seed + i.
            autoreset_mode: "NextStep" (default), "SameStep" or "Disabled" (or a gymnasium
                AutoresetMode), as gymnasium 1.x defines them.
            servers: K > 1 starts K - 1 more servers of the same image (closed with the
                vector env) and splits the envs over them; they step concurrently.
            restart_crashed: when a server dies, make its envs again in a new one: only those
                envs' episodes end (truncated, `infos["dacbench_remote"]["crashed"]`; in mode
                SameStep in `final_info`, with the new envs' reset observations), the others
                go on; `vector_env.restarts` counts the servers replaced. Default: the runner's
                `restart_crashed`. Without it a dead server raises ServerCrashed.

        Returns:
            A RemoteVectorEnv; one round trip per server per batch.

        Raises:
            BadConfig: servers out of range, servers > 1 on an attached runner, or an image
            with gymnasium < 1.0. And what start() and make_environment() raise.
        """

        mode = autoreset_value(autoreset_mode)
        if not isinstance(servers, int) or not 1 <= servers <= num_envs:
            raise BadConfig(f"servers must be an int from 1 to num_envs ({num_envs}), "
                            f"not {servers!r}")
        if servers > 1 and self.attach_to is not None:
            raise BadConfig("servers > 1 starts new servers; a runner attached with socket_id= "
                            "cannot start them (use servers=1)")
        if restart_crashed is None:
            restart_crashed = self.restart_crashed
        elif restart_crashed and self.attach_to is not None:
            raise BadConfig("restart_crashed=True replaces a dead server with a new one; a "
                            "runner attached with socket_id= cannot start another")
        counts = [num_envs // servers + (i < num_envs % servers) for i in range(servers)]
        arguments = {**self._arguments, "restart_crashed": bool(restart_crashed)}
        runners = [self] + [RemoteRunner(**arguments) for _ in range(servers - 1)]
        extra = runners[1:]

        def close_extra() -> None:
            for runner in extra:
                runner.close()
        parts = []
        try:
            for runner, count in zip(runners, counts, strict=True):
                runner.start()
                assert runner.connection is not None
                parts.append(_make_vector_part(runner.connection, runner, count, mode))
        except BaseException:
            for part in parts:
                part.close()
            close_extra()
            raise
        self._environments.append(parts[0])
        replacements = None
        if restart_crashed:
            replacements = [runner._replacer(functools.partial(
                _make_vector_part, runner=runner, count=count, mode=mode))
                for runner, count in zip(runners, counts, strict=True)]
        vector = RemoteVectorEnv(parts, counts, mode, on_close=close_extra,
                                 replacements=replacements)
        vector.extra_runners = extra  # the runners of servers 2..K, closed with the vector env
        return vector

    def provenance(self, seed: int | None, run_id: str, agent: str,
                   agent_rebuildable: bool = True) -> dict:
        """What a results line records so that the run can be repeated exactly."""
        runtime = self.runtime.describe() if self.runtime else {"runtime": str(self.runtime_spec)}
        image = self.image_provenance
        record = {
            "run_id": run_id,
            "benchmark": self.benchmark,
            "config": self.config,
            "kwargs": self.kwargs or None,
            "agent": agent,
            "agent_rebuildable": agent_rebuildable,
            "experiment": image.get("experiment", self.experiment),
            "image": image.get("image"),
            "image_path": str(self.image) if self.image else None,
            "image_sha256": image.get("sha256"),
            "image_origin": image.get("origin"),
            "dacbench": image.get("dacbench"),
            **runtime,
            "dacbench_remote_version": __version__,
            "base_seed": seed,
            "restart_crashed": self.restart_crashed,
        }
        record.update(self._object_record)
        if self.image is not None and not record["image_sha256"]:

            record["image_sha256"] = sha256_file(self.image)
        return record

    def run(self, agent: Any, number_of_episodes: int, seed: int | None = None,
            instances: list | tuple | None = None) -> list[EpisodeResult]:
        """Run episodes on `get_environment()` with DACBench's agent protocol.

        Without `seed`, episodes reset without a seed, exactly as DACBench's
        `run_benchmark(env, agent, n)`: the benchmark's own seed (`set_seed`) decides. With
        `seed=S`, episode i resets with S + i. `agent` is an object with act/train/end_episode,
        or a spec for `make_agent` ("random", "static", "module:factory"), or one of DACBench's
        baselines ("dacbench:random[:FIXED]", "dacbench:static:ACTION", "dacbench:optimal",
        "dacbench:dynamic"), which runs in the server next to the env (see run_baseline; there
        `seed` is the run's seed, as in DACBench's run_baselines). Each finished episode is
        appended to `results_path` as one complete JSON line. With `instances` (DACBench
        instance ids; not for baselines, which keep DACBench's own schedule), episode i resets
        with `options={"instance_id": instances[i % len(instances)]}` instead of DACBench's
        own schedule; either way a DACBench env's instance id is recorded per episode
        (`instance`) for agents run here.

        Returns:
            One EpisodeResult per episode (return, length, seed, provenance).

        Raises:
            BadConfig: number_of_episodes < 1 or an agent spec that cannot be built (a DACBench
            baseline the benchmark has no policy for: before the server starts, where the
            benchmark is one of DACBench's).
            ResultsWriteError: a results line could not be written whole (the file is left
            as it was). And what the env's reset/step and start() raise.
        """
        if number_of_episodes < 1:
            raise BadConfig(f"number_of_episodes must be at least 1, got {number_of_episodes}")
        if is_baseline_spec(agent):
            if instances:
                raise BadConfig(f"agent {agent!r}: DACBench's baselines follow DACBench's own "
                                "instance schedule; run them without instances")
            return self.run_baseline(agent, number_of_episodes, seed).episodes
        environment = self.get_environment()
        rebuildable = isinstance(agent, str)
        agent_name = agent if rebuildable else _qualified_name(agent)
        if rebuildable:
            agent = make_agent(agent, environment, seed)
        provenance = self.provenance(seed, uuid.uuid4().hex[:12], agent_name, rebuildable)
        instance_of = _instance_reader(environment)
        results = []
        for episode in range(number_of_episodes):
            episode_seed = None if seed is None else seed + episode
            options = ({"instance_id": instances[episode % len(instances)]} if instances
                       else None)
            result = run_episode(environment, agent, episode, episode_seed, options)
            result.instance = instance_of()
            result.server_restarts = self.restarts
            result.provenance = provenance
            results.append(result)
            if self.results_path is not None:
                append_record(self.results_path, result.to_record())
        return results

    def run_baseline(self, spec: str, number_of_episodes: int, seed: int | None = None, *,
                     steps: bool = False, progress: Callable[[int], Any] | None = None
                     ) -> BaselineRun:
        """Run one of DACBench's baselines in the server, next to the env, as DACBench's
        `run_baselines` does: the agent made by DACBench's own classes on the real env,
        its PerformanceTrackingWrapper and Logger, its `run_benchmark` loop.

        The env is built with `seed` (None: the benchmark's config seed, DACBench's default
        0): for a benchmark named without config, as run_baselines builds it
        (`get_benchmark(seed=seed)`); otherwise the configured benchmark with that seed. The
        global RNGs and the action space are seeded with it; episodes reset without a seed.

        Args:
            spec: "dacbench:random" (a new action every step), "dacbench:random:FIXED" (each
                kept FIXED steps), "dacbench:static:ACTION" (JSON), "dacbench:optimal" or
                "dacbench:dynamic" (DACBench's policy for the benchmark).
            number_of_episodes: episodes of the run.
            seed: the run's seed.
            steps: also return each episode's observations, actions and rewards.
            progress: called with the number of finished episodes while the run goes on.

        Returns:
            The run: its episodes (also appended to `results_path`, with provenance saying
            that the agent ran next to the env), DACBench's experiment name and the log files'
            text (`write_logs(outdir)` writes them in DACBench's layout).

        Raises:
            BadConfig: a malformed spec, a benchmark without that policy (naming those that
            have it; before the server starts when the benchmark is one of DACBench's), or no
            DACBench benchmark. And what start() raises, and what the env and agent raise
            (RemoteError).
        """
        baseline = parse_baseline(spec)
        if number_of_episodes < 1:
            raise BadConfig(f"number_of_episodes must be at least 1, got {number_of_episodes}")
        if self.benchmark.startswith("gymnasium:"):
            raise BadConfig(f"agent {spec!r}: DACBench's baselines run on DACBench benchmarks, "
                            f"not on {self.benchmark}; use random, static or module:factory")
        check_available(baseline, self.benchmark.rpartition(":")[2])
        self.start()
        assert self.connection is not None
        request = {**baseline.to_request(), "seed": seed, "episodes": number_of_episodes,
                   "steps": bool(steps), "target": self.benchmark, "config": self.config,
                   "description": self.benchmark_description}
        result = follow_baseline(self.connection, request, progress)
        provenance = {**self.provenance(seed, uuid.uuid4().hex[:12], spec),
                      "agent_side": "server (next to the env)", "dacbench_agent": result["agent"],
                      "baseline_seed": result["seed"],
                      "baseline_experiment": result["experiment_name"]}
        episodes = []
        for index, episode in enumerate(result["episodes"]):
            # Episodes reset without a seed, as in DACBench's loop: the run's seed is the
            # provenance's baseline_seed.
            episodes.append(EpisodeResult(
                index, None, episode["return"], episode["length"], episode["wall_time"],
                episode["terminated"], episode["truncated"], server_restarts=self.restarts,
                provenance=provenance))
            if self.results_path is not None:
                append_record(self.results_path, episodes[-1].to_record())
        return BaselineRun(spec, result["benchmark_class"], result["seed"],
                           result["experiment_name"], result["agent"], result["dacbench"],
                           episodes, result["steps"], result["logs"])


# RemoteRunner's keywords that RuntimeOptions holds, and the option each one is.
_RUNTIME_KEYWORDS = {"runtime": "kind", "image": "image", "python": "python", "binds": "binds",
                     "env": "env", "gpu": "gpu", "startup_timeout": "startup_timeout",
                     "call_timeout": "call_timeout"}


# Their defaults, read from the signature once (at import: a sweep's workers are forked after it).
_RUNTIME_DEFAULTS = {keyword: parameter.default for keyword, parameter
                     in inspect.signature(RemoteRunner.__init__).parameters.items()
                     if keyword in _RUNTIME_KEYWORDS}


def _from_options(options: RuntimeOptions, arguments: dict[str, Any]) -> dict[str, Any]:
    """The runtime keywords' values taken from `options`; BadConfig if a keyword was given as
    well (it differs from its default in RemoteRunner's signature)."""
    both = sorted(keyword for keyword in _RUNTIME_KEYWORDS
                  if _normal(arguments[keyword]) != _normal(_RUNTIME_DEFAULTS[keyword]))
    if both:
        raise BadConfig(f"runtime settings go either in options= or as keywords, not both: "
                        f"{', '.join(both)} given with options=")
    values = {keyword: getattr(options, option) for keyword, option in _RUNTIME_KEYWORDS.items()}
    values["env"] = dict(values["env"])
    return values


def _normal(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _make_vector_part(connection: ServerConnection, runner: RemoteRunner, count: int,
                      mode: str) -> RemoteEnvironmentClient:
    """`count` envs of the runner's benchmark stepped together in the server of `connection`."""
    return connection.make_vector_part(count, mode, runner.benchmark, runner.config,
                                       runner.kwargs, runner.benchmark_description)


def run_episode(environment, agent, episode: int, seed: int | None,
                options: dict | None = None) -> EpisodeResult:
    """One episode with DACBench's loop: act → step → train until done, then end_episode."""
    started = time.perf_counter()
    if options is None:
        state, _ = environment.reset(seed=seed)
    else:
        state, _ = environment.reset(seed=seed, options=options)
    reward: Any = 0
    total, length = 0.0, 0
    terminated = truncated = False
    info: Any = {}
    while not (terminated or truncated):
        action = agent.act(state, reward)
        state, reward, terminated, truncated, info = environment.step(action)
        agent.train(state, reward)
        total += float(reward)
        length += 1
    agent.end_episode(state, reward)
    crashed = isinstance(info, dict) and info.get("dacbench_remote") == crash_info()[
        "dacbench_remote"]
    return EpisodeResult(episode, seed, total, length, time.perf_counter() - started,
                         bool(terminated), bool(truncated), crashed=crashed)


def _instance_reader(environment) -> Callable[[], Any]:
    """A function that gives the env's DACBench instance id (`get_inst_id`) as a plain value,
    or None for envs without instances (asked once: they never grow them)."""
    getter = getattr(environment, "get_inst_id", None)
    if getter is None:
        getter = getattr(getattr(environment, "unwrapped", None), "get_inst_id", None)
    works = [getter is not None]

    def read() -> Any:
        if not works[0]:
            return None
        try:
            value = getter()
        except AttributeError:  # NoSuchAttribute: a remote env that is no DACBench env
            works[0] = False
            return None
        return value.item() if hasattr(value, "item") else value

    return read


def _qualified_name(agent: Any) -> str:
    cls = type(agent)
    return f"{cls.__module__}:{cls.__qualname__}"


def _object_provenance(benchmark: Any, description: dict) -> dict:
    """A benchmark object's class, DACBench's own JSON of it where possible, and a digest of
    exactly what is sent."""
    cls = type(benchmark)
    sent = json.dumps(description, sort_keys=True).encode()
    record = {"benchmark_class": f"{cls.__module__}:{cls.__qualname__}",
              "benchmark_sha256": hashlib.sha256(sent).hexdigest()}
    try:
        record["config"] = benchmark.to_json()  # what DACBench itself would ship, for readers
    except Exception:  # configs DACBench cannot serialise still ran exactly
        record["config"] = None
    return record


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `with` blocks and atexit stop servers (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)
