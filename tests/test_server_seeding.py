"""The server seeds Python's `random` and numpy's legacy global RNG, so benchmarks that draw from
them (DACBench's CMAES through modcma/ioh) repeat: before building an env and on reset(seed=s)."""

from __future__ import annotations

import random

import gymnasium
import numpy as np
import pytest

from dacbench_remote.server import control, envs


def global_draws() -> tuple[float, float]:
    return random.random(), float(np.random.random())


def draws_after_seeding(seed: int) -> tuple[float, float]:
    random.seed(seed)
    np.random.seed(seed)
    return global_draws()


class GlobalRngEnv(gymnasium.Env):
    """Draws its observations from the global RNGs, as modcma/ioh-based benchmarks do."""

    observation_space = gymnasium.spaces.Box(0.0, 1.0, (2,), np.float64)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self):
        self.built_with = global_draws()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array(global_draws()), {}

    def step(self, action):
        return np.array(global_draws()), 0.0, False, False, {}


class GlobalRngBenchmark:
    """A DACBench-like benchmark: a config with `seed`, and get_environment()."""

    def __init__(self):
        self.config = {"seed": 7}

    @classmethod
    def from_json(cls, text: str) -> GlobalRngBenchmark:
        import json

        benchmark = cls()
        benchmark.config.update(json.loads(text))
        return benchmark

    def get_environment(self) -> GlobalRngEnv:
        return GlobalRngEnv()


TARGET = f"{__name__}:GlobalRngBenchmark"


def test_seed_global_rngs_seeds_random_and_numpy_legacy_rng():
    expected = draws_after_seeding(123)
    random.seed(1)
    np.random.seed(1)
    envs.seed_global_rngs(123)
    assert global_draws() == expected


def test_seed_global_rngs_with_none_leaves_the_generators_alone():
    random.seed(5)
    np.random.seed(5)
    expected = global_draws()
    random.seed(5)
    np.random.seed(5)
    envs.seed_global_rngs(None)
    assert global_draws() == expected


@pytest.mark.parametrize("seed", [2**32, 2**70 + 3, -4])
def test_seeds_outside_numpys_legacy_range_are_accepted_and_repeat(seed):
    envs.seed_global_rngs(seed)
    first = global_draws()
    envs.seed_global_rngs(seed)
    assert global_draws() == first
    assert first != draws_after_seeding(0)


@pytest.mark.parametrize(("config", "expected"), [
    ({"seed": 3}, 3), ({"seed": np.int32(4)}, 4), ({}, None), ({"seed": None}, None),
    ({"seed": True}, None), ({"seed": "3"}, None), (None, None),
])
def test_benchmark_seed_reads_the_config_key_seed(config, expected):
    benchmark = GlobalRngBenchmark()
    benchmark.config = config
    assert envs.benchmark_seed(benchmark) == expected


def test_create_env_seeds_the_global_rngs_with_the_benchmarks_seed_before_building():
    env = envs.create_env(TARGET)
    assert env.built_with == draws_after_seeding(7)
    env = envs.create_env(TARGET, {"seed": 11})
    assert env.built_with == draws_after_seeding(11)


def test_reset_with_a_seed_seeds_the_global_rngs_before_the_envs_reset():
    remote = control.RemoteEnvironmentServer("e1", envs.create_env(TARGET))
    ok, (observation, _) = remote.handle(["reset", 42, None])
    assert ok
    assert tuple(observation) == draws_after_seeding(42)
    remote.handle(["step", 0])
    ok, (again, _) = remote.handle(["reset", 42, None])
    assert tuple(again) == tuple(observation)


def test_reset_without_a_seed_does_not_reseed():
    remote = control.RemoteEnvironmentServer("e1", envs.create_env(TARGET))
    remote.handle(["reset", 42, None])
    ok, (unseeded, _) = remote.handle(["reset", None, None])
    assert ok
    assert tuple(unseeded) != draws_after_seeding(42)
