"""Built-in agents with DACBench's protocol: act(state, reward), train(...), end_episode(...)."""

from __future__ import annotations

import importlib
import json
from typing import Any

import gymnasium

from ..errors import BadConfig
from ..wire.baselines import is_baseline_spec


class RandomAgent:
    """Samples the action space with its own seeded generator, so runs repeat exactly."""

    def __init__(self, env: gymnasium.Env, seed: int | None = None):
        self.action_space = env.action_space
        self.action_space.seed(seed)

    def act(self, state: Any, reward: Any) -> Any:
        return self.action_space.sample()

    def train(self, next_state: Any, reward: Any) -> None:
        """Random agents do not learn."""

    def end_episode(self, state: Any, reward: Any) -> None:
        """Nothing to do between episodes."""


class StaticAgent(RandomAgent):
    """Always plays the same action: the given one, or one sample drawn with the seed."""

    def __init__(self, env: gymnasium.Env, seed: int | None = None, action: Any = None):
        super().__init__(env, seed)
        self.action = self.action_space.sample() if action is None else action

    def act(self, state: Any, reward: Any) -> Any:
        return self.action


def make_agent(spec: str, env: gymnasium.Env, seed: int | None = None):
    """Build an agent from `random`, `static`, `static:ACTION_JSON` or `module:factory`.

    A factory is called as `factory(env, seed)` and must return an object with `act`, `train`
    and `end_episode`.
    """
    if is_baseline_spec(spec):
        raise BadConfig(f"agent {spec!r} is one of DACBench's baselines, which run in the server "
                        "next to the env: pass it to RemoteRunner.run (or run_baseline)")
    if spec == "random":
        return RandomAgent(env, seed)
    if spec == "static":
        return StaticAgent(env, seed)
    if spec.startswith("static:"):
        try:
            action = json.loads(spec.partition(":")[2])
        except json.JSONDecodeError as exc:
            raise BadConfig(f"agent {spec!r}: the static action is not valid JSON ({exc})") from exc
        return StaticAgent(env, seed, action=action)
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise BadConfig(f"unknown agent {spec!r}; use random, static, static:ACTION or module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BadConfig(f"agent {spec!r} cannot be imported: {exc}") from exc
    agent = factory(env, seed)
    missing = [m for m in ("act", "train", "end_episode") if not hasattr(agent, m)]
    if missing:
        raise BadConfig(f"agent {spec!r} lacks {', '.join(missing)} (DACBench's agent protocol)")
    return agent
