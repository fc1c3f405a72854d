"""Envs, agents and functions for experiment tests, imported by trial workers and servers as
`tests.experiment_helpers:NAME`.

`counting_agent` (from sweep_helpers) records every container trial that starts, so tests count
executions independently of the experiment's own bookkeeping.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium
import numpy as np

from tests.integration.sweep_helpers import COUNTER_ENV, counting_agent  # noqa: F401

SLOW_ENV = "DACBR_TEST_EPISODE_DELAY"


class QuadraticEnv(gymnasium.Env):
    """Three steps; each pays -(x - 3)^2 plus seeded noise: the best x is known (3), and the
    seeds matter to the value. `x` comes from the env's keyword arguments."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float64)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self, x: float = 0.0, noise: float = 0.1):
        self.x, self.noise, self.t = float(x), float(noise), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        delay = float(os.environ.get(SLOW_ENV, "0"))
        if delay:
            time.sleep(delay)
        return np.zeros(1), {}

    def step(self, action):
        self.t += 1
        reward = -(self.x - 3.0) ** 2 + self.noise * float(self.np_random.uniform(-1, 1))
        return np.zeros(1), reward, False, self.t >= 3, {}


def make_quadratic_env(x: float = 0.0, noise: float = 0.1) -> QuadraticEnv:
    return QuadraticEnv(x, noise)


def make_rendezvous_env(directory: str, me: str, other: str, wait: float = 60.0) -> QuadraticEnv:
    """A QuadraticEnv that is built only once `other`'s env exists too: two steps each using
    one finish only if they run at the same time (otherwise the first one raises)."""
    Path(directory, me).touch()
    deadline = time.monotonic() + wait
    while not Path(directory, other).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{me}: {other} did not start while {me} ran")
        time.sleep(0.05)
    return QuadraticEnv(3)


def make_raising_env():
    """A benchmark that cannot be built: its trials fail with this message."""
    raise RuntimeError("this benchmark raises on purpose")


def double(values: list, factor: float = 2.0) -> dict:
    """A `run` step function: JSON in, a table of outputs back."""
    return {"doubled": [v * factor for v in values], "count": len(values),
            "pid": os.getpid()}


def raising_function(**inputs) -> dict:
    raise ValueError(f"the run step's function raises on purpose (inputs {sorted(inputs)})")


def describe_file(path: str, **echo) -> dict:
    """A `run` step function: the sha256 of the file a reference named, and the inputs back."""
    import hashlib

    return {"sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(), **echo}
