"""RL agents in their own images: `train_agent` and `evaluate_agent`.

The host only orchestrates. It starts the benchmark's server in the benchmark's image and the
trainer (`python -m dacbench_remote.rl`) in the agent image, both bound to one private socket
directory that holds only that pair's sockets; the trainer talks to the server directly. The
host watches both, relays the trainer's progress, and on success moves the model and its
provenance into the results directory; on failure it names the side that died and leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .._sys.files import atomic_write_json, sha256_file
from .._sys.sockets import DATA_SUFFIX, new_socket_path, remove_socket_files, socket_answers
from ..config import load_config
from ..errors import (
    AgentCrashed,
    AgentError,
    BadConfig,
    ServerCrashed,
    StartupTimeout,
)
from ..images.resolve import resolve_agent_image, resolve_image
from ..rl.job import (
    JOB_DIR_INSIDE,
    JOB_NAME,
    MODEL_NAME,
    PROGRESS_NAME,
    RESULT_NAME,
    AgentJob,
)
from ..runtimes import auto_runtime_name, make_runtime
from ..runtimes.base import ServerProcess
from ..wire.benchmarks import benchmark_name, describe_benchmark, is_benchmark_object
from .runner import _stop_on_sigterm

PROVENANCE_NAME = "provenance.json"
EVALUATIONS_NAME = "evaluations.jsonl"
# How long the trainer may take to notice a dead server and report it, before the host stops it.
GRACE = 10.0


@dataclass
class AgentRun:
    """A finished `train_agent` or `evaluate_agent` run.

    Attributes:
        run_dir: the run's directory (model, provenance, evaluations).
        model_path: the saved model (`run_dir/model.zip`).
        provenance: what the run was: images (sha256s, experiment ids), seeds, hyperparameters,
            the SB3/torch/gymnasium versions in the agent image, the model's digests.
        episodes: the evaluation episodes (episode, seed, return, length, ...), if any.
    """

    run_dir: Path
    model_path: Path
    provenance: dict
    episodes: list[dict] = field(default_factory=list)

    @property
    def returns(self) -> list[float]:
        """The evaluation episodes' returns, in order."""
        return [episode["return"] for episode in self.episodes]


def train_agent(
    benchmark: Any,
    algorithm: str = "PPO",
    *,
    timesteps: int,
    results_dir: str | Path = "results",
    seed: int = 0,
    num_envs: int = 1,
    hyperparameters: dict | None = None,
    eval_episodes: int = 0,
    eval_seed: int | None = None,
    experiment: str | None = None,
    agent_experiment: str | None = None,
    config: Any = None,
    kwargs: dict | None = None,
    env_image: str | Path | None = None,
    agent_image: str | Path | None = None,
    runtime: str | None = None,
    build: bool = True,
    binds: Sequence[str] = (),
    env: dict[str, str] | None = None,
    agent_binds: Sequence[str] = (),
    agent_env: dict[str, str] | None = None,
    torch_threads: int = 1,
    startup_timeout: float = 60.0,
    call_timeout: float = 300.0,
    progress: Callable[[str], None] | None = None,
) -> AgentRun:
    """Train a Stable-Baselines3 agent in its image on a benchmark served from another image.

    The trainer runs in the agent image's container and steps a RemoteVectorEnv of `num_envs`
    copies of the benchmark in the benchmark's server (env i reset with seed + i), through a
    socket directory private to the pair. The model is saved to a new run directory in
    `results_dir`, with `provenance.json`.

    Args:
        benchmark: a DACBench name ("Luby"), "gymnasium:ID", "module:attr", or a configured
            DACBench benchmark object, as for RemoteRunner.
        algorithm: the Stable-Baselines3 algorithm (PPO, A2C, DQN, SAC, TD3, DDPG): the agent
            the catalog's agent images serve.
        timesteps: total environment steps to train for.
        results_dir: where the run directory (`train-ALGORITHM-BENCHMARK-sSEED-ID`) is made.
        seed: seeds SB3 (random, numpy, torch, the action space) and the envs' resets.
        num_envs: envs stepped together in the server.
        hyperparameters: keyword arguments of the algorithm (e.g. {"n_steps": 64}); "policy"
            picks the policy (default "MlpPolicy").
        eval_episodes: after training, episodes of the deterministic policy on one env;
            episode i resets with eval_seed + i (default eval_seed: seed).
        experiment, agent_experiment: the catalog's experiment ids of the benchmark's image
            and of the agent image (default: each one's default version).
        config, kwargs: for a benchmark name: DACBench config keys; make() keyword arguments.
        env_image, agent_image: local .sif files instead of the catalog's.
        runtime: "auto" (Apptainer, else bubblewrap), "apptainer" or "bwrap" (a container
            runtime: each side runs in its own image); default: the config's default_runtime.
        build: build an image from its recipe when it is neither cached nor downloadable.
        binds, env: binds and environment variables for the benchmark's container.
        agent_binds, agent_env: the same for the agent's container.
        torch_threads: torch's CPU threads in the trainer (1 keeps runs repeatable and cheap).
        startup_timeout, call_timeout: seconds for the server to come up, and per call.
        progress: called with each progress line (image fetches, training progress).

    Returns:
        An AgentRun: run_dir, model_path, provenance, and the evaluation episodes.

    Raises:
        ServerCrashed: the benchmark's server died (the message says so, with its output).
        AgentCrashed: the agent's container died (killed, out of memory, ...).
        AgentError: the trainer raised (e.g. SB3 refused a hyperparameter).
        BadConfig, UnknownBenchmark, ImageError, RuntimeUnavailable, StartupTimeout: the run
        could not start. Nothing is left behind: no process, socket, mount or run directory.
    """
    target, description, object_record = _benchmark(benchmark, config)
    job = AgentJob(action="train", algorithm=algorithm, target=target, config=config,
                   kwargs=dict(kwargs or {}), description=description, num_envs=num_envs,
                   timesteps=timesteps, seed=seed, hyperparameters=dict(hyperparameters or {}),
                   eval_episodes=eval_episodes, eval_seed=seed if eval_seed is None else eval_seed,
                   torch_threads=torch_threads, call_timeout=call_timeout).check()
    report = progress or (lambda message: None)
    pair = _Pair(target, algorithm, experiment=experiment, agent_experiment=agent_experiment,
                 env_image=env_image, agent_image=agent_image, runtime=runtime, build=build,
                 binds=binds, env=env, agent_binds=agent_binds, agent_env=agent_env,
                 startup_timeout=startup_timeout, progress=report, announce=progress is not None)
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    name = f"train-{algorithm}-{_safe(target)}-s{seed}-{run_id}"
    with _job_dir(results, name) as job_dir:
        job.write(job_dir)
        result = pair.run(job_dir)
        provenance = {
            "run_id": run_id, "action": "train",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "algorithm": result["algorithm"], "benchmark": target, "config": config,
            "kwargs": job.kwargs or None, **object_record,
            "env_image": pair.env_record, "agent_image": pair.agent_record,
            "seed": seed, "num_envs": num_envs, "timesteps": timesteps,
            "hyperparameters": job.hyperparameters,
            "effective_hyperparameters": result.get("effective_hyperparameters", {}),
            "eval_seed": job.eval_seed, "eval_episodes": eval_episodes,
            "deterministic": job.deterministic, "torch_threads": torch_threads,
            "versions": result["versions"], "model": MODEL_NAME,
            "model_sha256": result["model_sha256"],
            "parameters_sha256": result["parameters_sha256"],
            "runtime": pair.runtime_name, "seconds": {**pair.seconds, **result["seconds"]},
            "dacbench_remote_version": __version__,
            "episodes": result.get("episodes", []),
        }
        atomic_write_json(job_dir / PROVENANCE_NAME, provenance)
        for scratch in (JOB_NAME, RESULT_NAME):
            (job_dir / scratch).unlink()
        run_dir = results / name
        job_dir.rename(run_dir)
    report(f"model saved to {run_dir / MODEL_NAME}")
    return AgentRun(run_dir, run_dir / MODEL_NAME, provenance, provenance["episodes"])


def evaluate_agent(
    run: str | Path | AgentRun,
    *,
    episodes: int,
    seed: int | None = None,
    deterministic: bool = True,
    env_image: str | Path | None = None,
    agent_image: str | Path | None = None,
    runtime: str | None = None,
    build: bool = True,
    torch_threads: int = 1,
    startup_timeout: float = 60.0,
    call_timeout: float = 300.0,
    progress: Callable[[str], None] | None = None,
) -> AgentRun:
    """Evaluate a model that train_agent saved: load it in the agent image and run episodes
    against its benchmark served from the benchmark's image, as recorded in its provenance.

    Episode i resets with seed + i (default: the run's eval_seed), so the same seed gives the
    returns train_agent's own evaluation gave. The evaluation is appended (one JSON line) to
    `run_dir/evaluations.jsonl`.

    Args:
        run: a run directory (or its model.zip) written by train_agent, or its AgentRun.
        episodes: how many episodes.
        seed: the first episode's reset seed (default: the run's eval_seed).
        deterministic: the policy's deterministic actions (as train_agent evaluates).
        env_image, agent_image: local .sif files instead of the recorded experiments' images;
            an image whose sha256 differs from the recorded one is used with a warning.
        runtime, build, torch_threads, startup_timeout, call_timeout, progress: as for
            train_agent.

    Returns:
        An AgentRun whose episodes are this evaluation's and whose provenance records it.

    Raises:
        BadConfig: `run` is no run directory of train_agent. And what train_agent raises.
    """
    run_dir = Path(run.run_dir if isinstance(run, AgentRun) else run)
    if run_dir.name == MODEL_NAME:
        run_dir = run_dir.parent
    recorded = _read_provenance(run_dir)
    if sha256_file(run_dir / MODEL_NAME) != recorded.get("model_sha256"):
        raise BadConfig(f"{run_dir / MODEL_NAME} is not the model its provenance records "
                        f"(sha256 {recorded.get('model_sha256')}): it was changed or replaced")
    if recorded.get("benchmark_class"):
        raise BadConfig(f"{run_dir} was trained on a benchmark object ({recorded['benchmark_class']}), "
                        "which its provenance describes but cannot rebuild; evaluate it from "
                        "Python with the same object")
    target = recorded["benchmark"]
    job = AgentJob(action="evaluate", algorithm=recorded["algorithm"], target=target,
                   config=recorded.get("config"), kwargs=recorded.get("kwargs") or {},
                   eval_episodes=episodes,
                   eval_seed=recorded.get("eval_seed", 0) if seed is None else seed,
                   deterministic=deterministic, torch_threads=torch_threads,
                   call_timeout=call_timeout).check()
    report = progress or (lambda message: None)
    pair = _Pair(target, job.algorithm, experiment=recorded["env_image"].get("experiment"),
                 agent_experiment=recorded["agent_image"].get("experiment"),
                 env_image=env_image, agent_image=agent_image, runtime=runtime, build=build,
                 startup_timeout=startup_timeout, progress=report, announce=progress is not None)
    with _job_dir(run_dir.parent, f"evaluate-{run_dir.name}") as job_dir:
        job.write(job_dir)
        shutil.copyfile(run_dir / MODEL_NAME, job_dir / MODEL_NAME)
        for side in ("env_image", "agent_image"):
            _warn_if_other_image(side, getattr(pair, side.replace("image", "record")),
                                 recorded[side], report)
        result = pair.run(job_dir)
    evaluation = {
        "evaluated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_id": recorded.get("run_id"), "episodes": result["episodes"],
        "seed": job.eval_seed, "deterministic": deterministic,
        "env_image": pair.env_record, "agent_image": pair.agent_record,
        "versions": result["versions"], "parameters_sha256": result["parameters_sha256"],
        "runtime": pair.runtime_name, "seconds": {**pair.seconds, **result["seconds"]},
        "dacbench_remote_version": __version__,
    }
    with open(run_dir / EVALUATIONS_NAME, "a") as log:
        log.write(json.dumps(evaluation, sort_keys=True) + "\n")
    return AgentRun(run_dir, run_dir / MODEL_NAME, {**recorded, "evaluation": evaluation},
                    result["episodes"])


class _Pair:
    """The benchmark's server and the agent's trainer, each in its image, sharing one private
    socket directory; `run(job_dir)` starts both, waits for the trainer's result, stops both."""

    def __init__(self, target: str, algorithm: str, *, experiment: str | None,
                 agent_experiment: str | None, env_image: str | Path | None,
                 agent_image: str | Path | None, runtime: str | None, build: bool,
                 binds: Sequence[str] = (), env: dict[str, str] | None = None,
                 agent_binds: Sequence[str] = (), agent_env: dict[str, str] | None = None,
                 startup_timeout: float, progress: Callable[[str], None],
                 announce: bool = False):
        config = load_config()
        name = runtime or config.default_runtime
        self.runtime_name = auto_runtime_name() if name == "auto" else name
        if self.runtime_name == "local":
            raise BadConfig("train/evaluate run the agent and the benchmark each in its own "
                            "image: choose a container runtime (auto, apptainer or bwrap), "
                            "not local")
        started = time.monotonic()
        # Fetching or building an image takes long: say so (on stderr) when progress is wanted.
        self.env_path, self.env_record = _image(env_image, lambda: resolve_image(
            target, experiment, build=build, progress=announce), target, experiment)
        self.agent_path, self.agent_record = _image(agent_image, lambda: resolve_agent_image(
            algorithm, agent_experiment, build=build, progress=announce), algorithm,
            agent_experiment)
        self.seconds = {"images": time.monotonic() - started}
        progress(f"benchmark image {self.env_path.name} ({self.env_record.get('sha256', '')[:12]}), "
                 f"agent image {self.agent_path.name} ({self.agent_record.get('sha256', '')[:12]})")
        self.target, self.algorithm = target, algorithm
        self.binds, self.env = [*config.binds, *binds], {**config.env, **(env or {})}
        self.agent_binds, self.agent_env = list(agent_binds), dict(agent_env or {})
        self.startup_timeout = startup_timeout
        self.progress = progress

    def run(self, job_dir: Path) -> dict:
        """Start both sides, relay progress until the trainer ends; its result, or the error
        naming the side that failed. Both sides are stopped either way."""
        _stop_on_sigterm()
        socket_path = new_socket_path("pair")
        server = trainer = None
        try:
            started = time.monotonic()
            env_runtime = make_runtime(self.runtime_name, image=self.env_path, binds=self.binds,
                                       env=self.env)
            server = env_runtime.start(socket_path)
            self._wait_for_server(server, socket_path)
            self.seconds["server_startup"] = time.monotonic() - started
            agent_runtime = make_runtime(
                self.runtime_name, image=self.agent_path, env=self.agent_env,
                binds=[f"{job_dir}:{JOB_DIR_INSIDE}", *self.agent_binds])
            agent_runtime.server_args = ("--job", f"{JOB_DIR_INSIDE}/{JOB_NAME}")
            trainer = agent_runtime.start(socket_path)
            return self._watch(server, trainer, job_dir)
        finally:
            # The trainer first: stopping it must not look like the server dying under it.
            for process in (trainer, server):
                if process is not None:
                    process.stop()
            remove_socket_files(socket_path)

    def _wait_for_server(self, server: ServerProcess, socket_path: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        both = (socket_path, Path(str(socket_path) + DATA_SUFFIX))
        while not all(socket_answers(path, timeout=1.0) for path in both):
            if not server.alive():
                raise ServerCrashed(f"the benchmark's server ({self.target}, image "
                                    f"{self.env_path.name}) exited during startup; last "
                                    f"output:\n{server.output_tail() or '(none)'}")
            if time.monotonic() > deadline:
                raise StartupTimeout(f"the benchmark's server ({self.target}) did not answer "
                                     f"within {self.startup_timeout:.0f} s; its output so far:\n"
                                     f"{server.output_tail() or '(none)'}")
            time.sleep(0.02)

    def _watch(self, server: ServerProcess, trainer: ServerProcess, job_dir: Path) -> dict:
        """Relay progress until the trainer exits; then its result or the right error."""
        lines = _Tail(job_dir / PROGRESS_NAME)
        server_died_at = None
        while trainer.alive():
            for line in lines.new():
                self.progress(line)
            if server_died_at is None and not server.alive():
                server_died_at = time.monotonic()  # the trainer notices on its next call
            if server_died_at is not None and time.monotonic() - server_died_at > GRACE:
                break
            time.sleep(0.05)
        for line in lines.new():
            self.progress(line)
        result = _read_result(job_dir / RESULT_NAME)
        if result is not None and result.get("error", {}).get("type", "").endswith(
                ("ServerCrashed", "ConnectionBroken")):
            server.wait_gone(GRACE)  # the trainer saw it die: let the host see it too
        if not server.alive():
            raise ServerCrashed(
                f"the benchmark's server ({self.target}, image {self.env_path.name}) died while "
                f"the agent ({self.algorithm}) was running: {_ending(server)}; its last output:\n"
                f"{server.output_tail() or '(none)'}\nthe agent's last output:\n"
                f"{trainer.output_tail(8) or '(none)'}")
        trainer.wait_gone(5.0)
        code = trainer.process.poll()
        if result is None or code not in (0, 1):
            raise AgentCrashed(
                f"the agent's container ({self.algorithm}, image {self.agent_path.name}) died: "
                f"{_ending(trainer)}; the benchmark's server was still running. Its last "
                f"output:\n{trainer.output_tail() or '(none)'}")
        if result.get("status") != "ok":
            error = result.get("error", {})
            raise AgentError(error.get("type", "Exception"), error.get("message", ""),
                             error.get("traceback", ""))
        return result


class _Tail:
    """The lines appended to a file since the last call (the trainer's progress log)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, ""

    def new(self) -> list[str]:
        try:
            with open(self.path) as handle:
                handle.seek(self.offset)
                text = handle.read()
                self.offset = handle.tell()
        except OSError:
            return []
        *lines, self.partial = (self.partial + text).split("\n")
        return lines


def _ending(process: ServerProcess) -> str:
    """How a process ended, in words: its exit status or the signal that killed it."""
    process.wait_gone(2.0)
    code = process.process.poll()
    if code is None:
        return "it stopped answering"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code > 128 and code - 128 in signal.valid_signals():
        return f"killed by {signal.Signals(code - 128).name} (exit status {code})"
    return f"exit status {code}"


def _read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_provenance(run_dir: Path) -> dict:
    path = run_dir / PROVENANCE_NAME
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadConfig(f"{run_dir} is not a run directory of train_agent: cannot read "
                        f"{PROVENANCE_NAME} ({exc})") from exc
    if not (run_dir / MODEL_NAME).is_file():
        raise BadConfig(f"{run_dir} holds no {MODEL_NAME}")
    return recorded


@contextlib.contextmanager
def _job_dir(parent: Path, name: str) -> Iterator[Path]:
    """A private directory for one job beside where its results go, removed unless the block
    moved it away: a failed run leaves no half-written model."""
    path = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _image(path: str | Path | None, resolve: Callable[[], tuple[Path, dict]], name: str,
           experiment: str | None) -> tuple[Path, dict]:
    """A local image file (hashed) or the catalog's, with its provenance record."""
    if path is None:
        image, record = resolve()
        return image, {**record, "path": str(image)}
    image = Path(path).absolute()
    if not image.is_file():
        raise BadConfig(f"image {image} does not exist")
    return image, {"image": image.name, "path": str(image), "sha256": sha256_file(image),
                   "origin": "local file", "experiment": experiment, "served": name}


def _warn_if_other_image(side: str, record: dict, recorded: dict,
                         report: Callable[[str], None]) -> None:
    if record.get("sha256") != recorded.get("sha256"):
        report(f"warning: the {side.replace('_', ' ')} {record.get('image')} has sha256 "
               f"{str(record.get('sha256'))[:16]}..., the model was trained with "
               f"{str(recorded.get('sha256'))[:16]}...: returns may differ")


def _benchmark(benchmark: Any, config: Any) -> tuple[str, dict | None, dict]:
    """(target name, benchmark object description or None, provenance of an object)."""
    if is_benchmark_object(benchmark):
        if config is not None:
            raise BadConfig("config= is for benchmark names; a benchmark object carries its own")
        description = describe_benchmark(benchmark)
        cls = type(benchmark)
        sent = json.dumps(description, sort_keys=True).encode()
        return benchmark_name(benchmark), description, {
            "benchmark_class": f"{cls.__module__}:{cls.__qualname__}",
            "benchmark_sha256": hashlib.sha256(sent).hexdigest()}
    if not isinstance(benchmark, str) or not benchmark:
        raise BadConfig(f"benchmark must be a name or a DACBench benchmark object, not "
                        f"{benchmark!r}")
    return benchmark, None, {}


def _safe(name: str) -> str:
    """A benchmark name as a piece of a directory name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]

