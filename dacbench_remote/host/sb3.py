"""A Stable-Baselines3 VecEnv over a RemoteVectorEnv (or any gymnasium 1.x VectorEnv), to train SB3.

Stable-Baselines3 is imported only when an adapter is made, so importing dacbench_remote needs
neither SB3 nor torch.
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from ..errors import BadConfig, RemoteError
from .vector import PYTHON_DTYPES

INSTALL_HINT = "pip install stable-baselines3 (or pip install 'dacbench-remote[sb3]')"
# gymnasium's SameStep infos of the envs that just finished: the final observation and info
# (the rest of a finished env's infos is its reset's).
_FINAL_KEYS = ("final_obs", "final_info")


def to_sb3(vector_env: Any) -> Any:
    """`vector_env` as a `stable_baselines3.common.vec_env.VecEnv` (an SB3VecEnv instance).

    The vector env must autoreset in gymnasium's "SameStep" mode, e.g.
    `runner.get_vector_environment(n, autoreset_mode="SameStep")`; other modes raise BadConfig.
    Raises ImportError naming the package to install when SB3 is not installed.
    """
    return sb3_vec_env_class()(vector_env)


def __getattr__(name: str) -> Any:
    """`SB3VecEnv` (the adapter class) is made on first use, when SB3 can be imported."""
    if name == "SB3VecEnv":
        return sb3_vec_env_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def sb3_vec_env_class() -> type:
    """The adapter class, a subclass of SB3's VecEnv (imports SB3; ImportError if missing)."""
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError as exc:
        raise ImportError(
            f"the Stable-Baselines3 adapter needs stable-baselines3, which is not installed "
            f"here ({exc}); install it: {INSTALL_HINT}") from exc
    return type("SB3VecEnv", (_Adapter, VecEnv), {
        "__module__": __name__, "__qualname__": "SB3VecEnv", "__doc__": _Adapter.__doc__})


class _Adapter:
    """SB3's VecEnv API over a gymnasium 1.x VectorEnv in "SameStep" autoreset mode.

    Behaves like SB3's DummyVecEnv over the same envs:
    - `reset()` returns the observations only; it uses the seeds of `seed()` and the options of
      `set_options()` once, and keeps the infos in `reset_infos`.
    - `step_wait()` returns (obs, rewards as float32, dones = terminated | truncated, infos as a
      list of dicts). A finished env is already reset: its observation is the reset one, its
      info is the last step's with `terminal_observation` (the final observation) and
      `TimeLimit.truncated` (truncated and not terminated) added, and `reset_infos[i]` holds
      the reset's info.
    - Infos are gymnasium's batched infos taken apart again (the `_key` masks say which env
      has which key). Numbers gymnasium batched from Python bool/int/float come back as
      those; an env's own numpy int64/float64 scalars come back as Python int/float too (once
      batched, the two look the same); other numpy scalars, numpy bools too, keep their type.
    - Observations: numpy arrays (a dict of arrays, in the space's key order, for Dict spaces;
      a tuple for Tuple spaces).
    - `get_attr`, `set_attr` and `env_method` take any indices (a RemoteVectorEnv reaches a
      subset with call_at/set_attr_at; another VectorEnv only all envs: BadConfig otherwise).
    - `step_async` only stores the actions: the batch makes its round trip in `step_wait`.
    """

    def __init__(self, vector_env: Any):

        mode = getattr(vector_env, "metadata", {}).get("autoreset_mode", AutoresetMode.NEXT_STEP)
        value = getattr(mode, "value", mode)
        if value != AutoresetMode.SAME_STEP.value:
            raise BadConfig(
                f"the Stable-Baselines3 adapter needs a vector env that autoresets in gymnasium's "
                f"'SameStep' mode (SB3 wants the reset observation and the final one, as "
                f"infos[i]['terminal_observation'], from the same step); this one uses {value!r}. "
                f"Make it with runner.get_vector_environment(n, autoreset_mode='SameStep')")
        self.vector_env = vector_env
        self._actions: Any = None
        super().__init__(vector_env.num_envs, vector_env.single_observation_space,  # type: ignore[call-arg]
                         vector_env.single_action_space)
        metadata = getattr(vector_env, "metadata", {}) or {}
        self.metadata = {key: item for key, item in metadata.items() if key != "autoreset_mode"}

    # SB3's VecEnv API ------------------------------------------------------------------------

    def reset(self) -> Any:
        """Reset every env (with the seeds and options set before, used once); observations only."""
        options = self._shared_options()
        observations, infos = self.vector_env.reset(seed=self._seed_argument(), options=options)
        self.reset_infos = [_unbatch(infos, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return self._observations(observations)

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions; `step_wait` sends them."""
        self._actions = actions

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict]]:
        """Step every env with the stored actions; finished envs come back reset (see class)."""
        actions, self._actions = self._actions, None
        if actions is None:
            raise RuntimeError("step_wait() without step_async(actions) first")
        observations, rewards, terminated, truncated, infos = self.vector_env.step(actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        finished = infos.get("_final_obs", np.zeros(self.num_envs, dtype=bool))
        final_infos = infos.get("final_info", {})
        step_infos: list[dict] = []
        for i in range(self.num_envs):
            info = _unbatch(infos, i, skip=_FINAL_KEYS)
            if dones[i]:
                if not finished[i]:
                    raise RuntimeError(f"env {i} finished but the vector env gave no final_obs for "
                                       "it: it does not autoreset in 'SameStep' mode")
                self.reset_infos[i] = info
                info = _unbatch(final_infos, i) if infos["_final_info"][i] else {}
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if dones[i]:
                info["terminal_observation"] = infos["final_obs"][i]
            step_infos.append(info)
        return (self._observations(observations), np.asarray(rewards, dtype=np.float32), dones,
                step_infos)

    def close(self) -> None:
        """Close the vector env (a RemoteVectorEnv: its servers' envs and its extra servers)."""
        self.vector_env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """Attribute `attr_name` of the envs at `indices` (all by default); AttributeError if absent."""
        values = _attribute_errors(self.vector_env.get_attr, attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set `attr_name` to `value` in the envs at `indices` (all by default)."""
        order = self._subset(indices, "set_attr")
        if order is None:
            _attribute_errors(self.vector_env.set_attr, attr_name, [value] * self.num_envs)
        else:
            _attribute_errors(self.vector_env.set_attr_at, order, attr_name,
                              [value] * len(order))

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call method `method_name` of the envs at `indices` (all by default), in that order."""
        order = self._subset(indices, "env_method")
        if order is None:
            return list(_attribute_errors(self.vector_env.call, method_name, *method_args,
                                          **method_kwargs))
        return list(_attribute_errors(self.vector_env.call_at, order, method_name, *method_args,
                                      **method_kwargs))

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        """False for every env: their wrappers live in the servers, where no class of this
        process can be checked against them. (SB3 asks this to find a Monitor; wrap the adapter
        in `VecMonitor` for episode statistics.)
        """
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's render() frame (render_mode "rgb_array"), for SB3's render()."""
        if self.render_mode != "rgb_array":

            warnings.warn(f"The render mode is {self.render_mode}, but this method assumes it is "
                          "`rgb_array` to obtain images.", stacklevel=2)
            return [None for _ in range(self.num_envs)]
        return list(self.vector_env.call("render"))

    # -----------------------------------------------------------------------------------------

    def _seed_argument(self) -> int | list[int | None] | None:
        """SB3's per-env seeds as gymnasium's reset(seed=...): None, seed (env i: seed+i) or a list."""
        seeds = list(self._seeds)
        if all(seed is None for seed in seeds):
            return None
        first = seeds[0]
        if isinstance(first, (int, np.integer)) and seeds == [first + i for i in range(len(seeds))]:
            return int(first)  # what seed() sets; gymnasium gives env i seed + i
        return seeds

    def _shared_options(self) -> dict | None:
        options = self._options
        if any(option != options[0] for option in options):
            raise BadConfig("the envs of a vector env are reset with the same options; "
                            "set_options() got different ones per env. Pass one dict")
        return dict(options[0]) if options[0] else None

    def _subset(self, indices: Any, operation: str) -> list[int] | None:
        """The env indices asked for, or None for all envs in order (one call reaches them)."""
        order = [int(i) for i in self._get_indices(indices)]
        if order == list(range(self.num_envs)):
            return None
        if not hasattr(self.vector_env, "call_at"):
            raise BadConfig(
                f"{operation}() on some envs needs a RemoteVectorEnv (call_at/set_attr_at); "
                f"{type(self.vector_env).__name__} reaches every env at once. Use indices=None")
        return order

    def _observations(self, observations: Any) -> Any:
        """The batch as SB3's DummyVecEnv returns it (writable arrays it owns)."""

        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return OrderedDict((key, _owned(observations[key])) for key in space.spaces)
        if isinstance(space, spaces.Tuple):
            return tuple(_owned(item) for item in observations)
        return _owned(observations)


def _owned(array: Any) -> np.ndarray:
    """A copy: a vector env may reuse its batch arrays (SyncVectorEnv with copy=False)."""
    return np.array(array, copy=True)


def _unbatch(infos: dict, index: int, skip: tuple[str, ...] = ()) -> dict:
    """Env `index`'s info from gymnasium's batched infos: the keys whose `_key` mask is set."""
    info: dict = {}
    for key, value in infos.items():
        mask = infos.get(f"_{key}")
        # No mask: `key` is itself a mask (gymnasium gives every data key one).
        if key in skip or mask is None or not mask[index]:
            continue
        info[key] = _element(value, index)
    return info


def _element(value: Any, index: int) -> Any:
    if isinstance(value, dict):
        return _unbatch(value, index)
    if not isinstance(value, np.ndarray):
        return value[index]
    item = value[index]
    if value.dtype == object:
        return item
    if value.ndim > 1:
        return np.array(item)
    if value.dtype in PYTHON_DTYPES:
        return item.item()
    return item


def _attribute_errors(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `function`; a missing attribute in a server raises AttributeError here, as SB3 expects."""
    try:
        return function(*args, **kwargs)
    except RemoteError as exc:
        if exc.remote_type == "AttributeError":
            raise AttributeError(exc.remote_message) from exc
        raise

