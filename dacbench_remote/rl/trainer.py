"""The trainer inside the agent image: a Stable-Baselines3 algorithm trained on (or a saved model
evaluated against) the benchmark served by the server whose socket it is given.

It connects to that server directly (the host only started both sides), writes progress lines
as it goes, the model atomically, and one result file at the end.
"""

from __future__ import annotations

import hashlib
import inspect
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from .. import __version__
from .._sys.files import atomic_output, sha256_file
from ..errors import BadConfig
from ..host.client import RemoteEnvironmentClient, ServerConnection
from ..host.sb3 import to_sb3
from ..host.vector import RemoteVectorEnv
from .job import MODEL_NAME, AgentJob

# How often (in timesteps) training reports progress, at most.
PROGRESS_EVERY = 1000
# What the algorithm's constructor takes that the job decides (not a hyperparameter).
_DECIDED = {"env", "seed", "device", "verbose", "_init_setup_model", "tensorboard_log"}


def run_job(job: AgentJob, socket_path: str, job_dir: Path,
            progress: Callable[[str], None]) -> dict[str, Any]:
    """Train or evaluate as `job` says; return the result record (see host/training.py).

    Raises BadConfig for an algorithm or hyperparameter SB3 refuses, and what the env's
    server raises (ServerCrashed when it dies).
    """
    import stable_baselines3
    import torch

    torch.set_num_threads(job.torch_threads)
    algorithm = algorithm_class(job.algorithm)
    started = time.monotonic()
    connection = ServerConnection(socket_path, timeout=job.call_timeout, handshake_timeout=30.0)
    seconds = {"connect": time.monotonic() - started}
    result: dict[str, Any] = {
        "action": job.action, "algorithm": algorithm.__name__,
        "versions": {"stable_baselines3": stable_baselines3.__version__,
                     "torch": torch.__version__, "gymnasium": gymnasium.__version__,
                     "numpy": np.__version__, "python": platform.python_version(),
                     "dacbench_remote": __version__},
        "server": connection.server_facts,
    }
    try:
        model_path = job_dir / MODEL_NAME
        if job.action == "train":
            model = _train(job, algorithm, connection, progress, seconds)
            with atomic_output(model_path) as tmp, open(tmp, "wb") as handle:
                model.save(handle)
            progress(f"saved the model ({model_path.stat().st_size / 1e3:.0f} kB)")
            result["timesteps"] = int(model.num_timesteps)
            result["effective_hyperparameters"] = effective_hyperparameters(model, algorithm)
        else:
            model = algorithm.load(model_path, device="cpu")
        result["model_sha256"] = sha256_file(model_path)
        result["parameters_sha256"] = parameters_digest(model)
        if job.eval_episodes:
            from stable_baselines3.common.utils import set_random_seed

            started = time.monotonic()
            set_random_seed(job.eval_seed)  # a stochastic policy's samples repeat too
            result["episodes"] = _evaluate(job, model, connection, progress)
            seconds["evaluate"] = time.monotonic() - started
    finally:
        connection.close()
    result["seconds"] = {name: round(value, 3) for name, value in seconds.items()}
    return result


def algorithm_class(name: str) -> type:
    """Stable-Baselines3's algorithm class called `name` (PPO, A2C, DQN, SAC, TD3, DDPG)."""
    import stable_baselines3
    from stable_baselines3.common.base_class import BaseAlgorithm

    found = getattr(stable_baselines3, name, None)
    if not (isinstance(found, type) and issubclass(found, BaseAlgorithm)):
        known = sorted(n for n in dir(stable_baselines3)
                       if isinstance(getattr(stable_baselines3, n), type)
                       and issubclass(getattr(stable_baselines3, n), BaseAlgorithm))
        raise BadConfig(f"{name!r} is not an algorithm of Stable-Baselines3 "
                        f"{stable_baselines3.__version__}; known: {', '.join(known)}")
    return found


def _train(job: AgentJob, algorithm: type, connection: ServerConnection,
           progress: Callable[[str], None], seconds: dict[str, float]) -> Any:
    """The trained model; `seconds` gets "setup" (the envs in the server, the model) and
    "learn" (SB3's learn alone: what a step costs, times the timesteps)."""
    from stable_baselines3.common.vec_env import VecMonitor

    started = time.monotonic()
    part = connection.make_vector_part(job.num_envs, "SameStep", job.target, job.config,
                                       job.kwargs, job.description)
    vector = VecMonitor(to_sb3(RemoteVectorEnv([part], [job.num_envs], "SameStep")))
    hyperparameters = dict(job.hyperparameters)
    policy = hyperparameters.pop("policy", "MlpPolicy")
    refused = sorted(set(hyperparameters) & _DECIDED)
    if refused:
        raise BadConfig(f"hyperparameters {', '.join(refused)} are set by the job (seed, env, "
                        "device), not as hyperparameters")
    try:
        model = algorithm(policy, vector, seed=job.seed, device="cpu", verbose=0,
                          **hyperparameters)
    except TypeError as exc:  # an unknown keyword: name what the algorithm takes
        accepted = sorted(set(inspect.signature(algorithm.__init__).parameters) - _DECIDED
                          - {"self", "policy", "kwargs"})
        raise BadConfig(f"{algorithm.__name__} refused the hyperparameters ({exc}); it takes "
                        f"{', '.join(accepted)}") from exc
    progress(f"training {algorithm.__name__} for {job.timesteps} timesteps on {job.num_envs} "
             f"env(s) of {job.target}, seed {job.seed}")
    learning = time.monotonic()
    seconds["setup"] = learning - started
    model.learn(total_timesteps=job.timesteps, callback=_progress_callback(progress, job))
    seconds["learn"] = time.monotonic() - learning
    vector.close()
    return model


def _progress_callback(progress: Callable[[str], None], job: AgentJob) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class Progress(BaseCallback):
        """Reports timesteps, episodes and the recent mean return now and then."""

        def _on_training_start(self) -> None:
            self.next_report = min(PROGRESS_EVERY, job.timesteps)
            self.started = time.monotonic()

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_report:
                self.next_report += PROGRESS_EVERY
                episodes = [info["r"] for info in self.model.ep_info_buffer]
                mean = f", mean return {np.mean(episodes):.4g} (last {len(episodes)} episodes)" \
                    if episodes else ""
                rate = self.num_timesteps / max(time.monotonic() - self.started, 1e-9)
                progress(f"timesteps {self.num_timesteps}/{job.timesteps} "
                         f"({rate:.0f}/s){mean}")
            return True

    return Progress()


def _evaluate(job: AgentJob, model: Any, connection: ServerConnection,
              progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Episodes of the model's (deterministic) policy on one env; episode i resets with
    eval_seed + i."""
    if job.description is not None:
        env = connection.make_benchmark_env(job.description)
    else:
        env = connection.make_env(job.target, job.config, job.kwargs)
    try:
        episodes = [_episode(env, model, index, job.eval_seed + index, job.deterministic)
                    for index in range(job.eval_episodes)]
    finally:
        env.close()
    returns = [episode["return"] for episode in episodes]
    progress(f"evaluated {len(episodes)} episodes: mean return {np.mean(returns):.6g}")
    return episodes


def _episode(env: RemoteEnvironmentClient, model: Any, index: int, seed: int,
             deterministic: bool) -> dict[str, Any]:
    observation, _ = env.reset(seed=seed)
    discrete = isinstance(env.action_space, gymnasium.spaces.Discrete)
    total, length, terminated, truncated = 0.0, 0, False, False
    while not (terminated or truncated):
        action, _ = model.predict(observation, deterministic=deterministic)
        observation, reward, terminated, truncated, _ = env.step(
            int(action) if discrete else action)
        total += float(reward)
        length += 1
    return {"episode": index, "seed": seed, "return": total, "length": length,
            "terminated": bool(terminated), "truncated": bool(truncated)}


def effective_hyperparameters(model: Any, algorithm: type) -> dict[str, Any]:
    """The constructor's arguments as the model holds them (defaults included), where they are
    plain values: what a rerun must pass to train the same way."""
    values = {}
    for name in inspect.signature(algorithm.__init__).parameters:
        if name in _DECIDED or name in ("self", "policy", "kwargs"):
            continue
        value = getattr(model, name, None)
        if isinstance(value, (bool, int, float, str)) or value is None:
            values[name] = value
    return values


def parameters_digest(model: Any) -> str:
    """sha256 over every parameter tensor of the model, in order (names, dtypes, shapes, bytes):
    equal for models with exactly the same weights."""
    digest = hashlib.sha256()
    for part, state in sorted(model.get_parameters().items()):
        for name, tensor in state.items():
            if not hasattr(tensor, "detach"):
                continue  # optimizer bookkeeping that is no tensor (e.g. param_groups)
            array = tensor.detach().cpu().numpy()
            digest.update(f"{part}.{name}:{array.dtype}:{array.shape}\0".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def print_progress(message: str) -> None:
    """Progress to stderr (the container's output), flushed at once."""
    print(f"dacbench-remote agent: {message}", file=sys.stderr, flush=True)
