"""DACBench's baselines next to the env, as `dacbench.run_baselines` runs them: the agent built
with DACBench's own classes on the real env, wrapped in its PerformanceTrackingWrapper with its
Logger, through its own `run_benchmark` loop. The episodes and the log files go to the host.

DACBench is imported inside the functions: the server runs without it too. Beyond what
run_baselines does, each run seeds the global RNGs and the action space with its seed (DACBench
leaves the action space unseeded, so its random baseline never repeats), and builds benchmarks
without `get_benchmark` (ToySGD, CMAES, Theory) as `set_seed(seed)` + `get_environment()`.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import BadConfig
from ..wire import codec
from ..wire.baselines import POLICY_TABLES, BaselineSpec, experiment_name, unavailable
from ..wire.benchmarks import rebuild_benchmark
from .envs import benchmark_object, benchmark_seed, seed_global_rngs


class Cancelled(Exception):
    """The host gave up on the run (it cancelled it, or the server is shutting down)."""


class EpisodeRecorder:
    """The env run_benchmark steps: DACBench's wrapped env, passed through unchanged, with each
    episode's return, length, end and wall time noted (and its steps, if asked)."""

    def __init__(self, env: Any, keep_steps: bool, on_episode, cancelled: threading.Event):
        self.env = env
        self.keep_steps = keep_steps
        self.on_episode = on_episode
        self.cancelled = cancelled
        self.episodes: list[dict] = []
        self.steps: list[dict] = []
        self._return: Any = 0
        self._length = 0
        self._started = time.perf_counter()
        self._current: dict = {}

    def reset(self, *args, **kwargs):
        observation, info = self.env.reset(*args, **kwargs)
        # Summed as the PerformanceTrackingWrapper sums (int 0, then the env's own reward type),
        # so the returns are the values it logs.
        self._return, self._length = 0, 0
        self._started = time.perf_counter()
        if self.keep_steps:
            self._current = {"observations": [copy.deepcopy(observation)], "actions": [],
                             "rewards": []}
        return observation, info

    def step(self, action):
        if self.cancelled.is_set():
            raise Cancelled("the baseline run was cancelled")
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._return += reward
        self._length += 1
        if self.keep_steps:
            self._current["observations"].append(copy.deepcopy(observation))
            self._current["actions"].append(copy.deepcopy(action))
            self._current["rewards"].append(reward)
        if terminated or truncated:
            self.episodes.append({"return": float(self._return), "length": self._length,
                                  "terminated": bool(terminated), "truncated": bool(truncated),
                                  "wall_time": time.perf_counter() - self._started})
            if self.keep_steps:
                self.steps.append(self._current)
            self.on_episode(len(self.episodes))
        return observation, reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str) -> Any:
        # DACBench's policies and logger read the env's own attributes (_next_goal, es, ...).
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


def run_baseline(request: dict, directory: Path, on_episode, cancelled: threading.Event) -> dict:
    """One baseline run (one seed, `episodes` episodes) with its logs written under `directory`.

    `request`: kind, fixed, action (the BaselineSpec), seed, episodes, steps, and the benchmark as
    `target` + `config`, or as a benchmark object's `description`.

    Returns the benchmark's class name, the seed, DACBench's experiment name, the agent, the
    episodes (and their steps if asked) and the log files' text by path under `directory`.
    Raises BadConfig when the benchmark has no such policy (before building any env) or is no
    DACBench benchmark, UnknownBenchmark when it does not exist here.
    """
    import dacbench
    from dacbench.agents import DynamicRandomAgent, GenericAgent, StaticAgent
    from dacbench.envs import policies
    from dacbench.logger import Logger
    from dacbench.runner import run_benchmark
    from dacbench.wrappers import PerformanceTrackingWrapper

    spec = BaselineSpec(request["kind"], request.get("fixed", 0), request.get("action"))
    seed = request.get("seed")
    if seed is not None:
        seed_global_rngs(seed)
    benchmark = _benchmark(request)
    class_name = type(benchmark).__name__
    policy = None
    if spec.kind in POLICY_TABLES:
        table = getattr(policies, POLICY_TABLES[spec.kind])
        problem = unavailable(spec.kind, class_name, list(table))
        if problem:
            raise BadConfig(problem)
        policy = table[class_name]
    if seed is None:  # the benchmark's own seed (DACBench's default 0)
        seed = benchmark_seed(benchmark) or 0
        seed_global_rngs(seed)
    name = experiment_name(spec, class_name, seed)

    logger = Logger(experiment_name=name, output_path=directory / class_name)
    env = _environment(benchmark, seed, plain=_is_plain(request))
    env.action_space.seed(seed)
    env = PerformanceTrackingWrapper(env, logger=logger.add_module(PerformanceTrackingWrapper))
    if spec.kind == "random":
        agent = DynamicRandomAgent(env, spec.fixed)
    elif spec.kind == "static":
        agent = StaticAgent(env, spec.action)
    else:
        try:  # run_baselines.run_policy: a policy class, else a function of (env, state)
            agent = policy(env)
        except Exception:
            agent = GenericAgent(env, policy)
    logger.add_agent(agent)
    logger.add_benchmark(benchmark)
    logger.set_env(env)
    if spec.kind == "static":
        logger.set_additional_info(action=spec.action)
    recorder = EpisodeRecorder(env, bool(request.get("steps")), on_episode, cancelled)
    try:
        run_benchmark(recorder, agent, int(request["episodes"]), logger)
    finally:
        logger.close()
    logs = {path.relative_to(directory).as_posix(): path.read_text()
            for path in sorted(directory.rglob("*")) if path.is_file()}
    return {"benchmark_class": class_name, "seed": seed, "experiment_name": name,
            "agent": _describe_agent(agent), "dacbench": getattr(dacbench, "__version__", None),
            "episodes": recorder.episodes,
            "steps": recorder.steps if request.get("steps") else None, "logs": logs}


def _is_plain(request: dict) -> bool:
    """A benchmark named without config: run_baselines' env (`get_benchmark`) is wanted."""
    return request.get("description") is None and request.get("config") is None


def _benchmark(request: dict) -> Any:
    description = request.get("description")
    if description is not None:
        return rebuild_benchmark(codec.decode(description))
    target = request.get("target")
    if not isinstance(target, str):
        raise BadConfig("a baseline run needs a benchmark (target or description)")
    try:
        return benchmark_object(target, request.get("config"))
    except BadConfig as exc:
        raise BadConfig(f"DACBench's baselines (dacbench:...) run on DACBench benchmarks: {exc}; "
                        "use the agents random, static or module:factory for it") from exc


def _environment(benchmark: Any, seed: int, *, plain: bool) -> Any:
    """The env of one run: run_baselines' `get_benchmark(seed=seed)` for a plain benchmark that
    has it; otherwise the configured benchmark with `seed` as its config seed."""
    if plain and callable(getattr(benchmark, "get_benchmark", None)):
        return benchmark.get_benchmark(seed=seed)
    if callable(getattr(benchmark, "set_seed", None)):
        benchmark.set_seed(seed)
    else:
        benchmark.config["seed"] = seed
    return benchmark.get_environment()


def _describe_agent(agent: Any) -> str:
    cls = type(agent)
    name = f"{cls.__module__}.{cls.__qualname__}"
    policy = getattr(agent, "policy", None)
    if callable(policy):
        name += f"({policy.__module__}.{getattr(policy, '__qualname__', policy)})"
    return name


class BaselineJob:
    """A baseline run in its own thread, so that the host can follow its episodes, wait for its
    result and cancel it; its log directory is removed when it ends or is discarded."""

    def __init__(self, request: dict):
        self.request = request
        self.directory = Path(tempfile.mkdtemp(prefix="dacbench-remote-baseline-"))
        self.cancelled = threading.Event()
        self.episodes_done = 0
        self.done = False
        self.result: dict | None = None
        self.error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="baseline")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        result = error = None
        try:
            result = run_baseline(self.request, self.directory, self._episode_done, self.cancelled)
        except BaseException as exc:  # reported to the host by wait()
            error = exc
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
        with self._condition:
            self.result, self.error, self.done = result, error, True
            self._condition.notify_all()

    def _episode_done(self, count: int) -> None:
        self.episodes_done = count

    def wait(self, seconds: float) -> None:
        """Return when the run has ended, or after `seconds`."""
        with self._condition:
            self._condition.wait_for(lambda: self.done, seconds)

    def discard(self) -> None:
        """Stop the run at its next step and remove its logs."""
        self.cancelled.set()
        shutil.rmtree(self.directory, ignore_errors=True)
