"""The server side of RemoteVectorEnv: N envs stepped in one loop, one frame per batch.

The N envs run inside gymnasium 1.x's own SyncVectorEnv, so autoreset modes, seeding (env i
gets seed+i) and the info conventions (`_key` masks, `final_obs`/`final_info`) are gymnasium's
exactly. Images with gymnasium < 1.0 are refused: their vector semantics differ.
"""

from __future__ import annotations

from typing import Any

import numpy

from ..errors import BadConfig
from ..wire.object_arrays import pack_objects


class VectorRefused(BadConfig, ValueError):
    """A vector request this image or these arguments cannot serve (the host gets BadConfig)."""


class BatchedEnvs:
    """N environments behind gymnasium's SyncVectorEnv, with spaces of one copy.

    The server's env wrapper reads `observation_space`/`action_space`: they are the single
    spaces here; the host batches them itself.
    """

    def __init__(self, make_one, count: int, autoreset_mode: str):
        import gymnasium
        from gymnasium.vector import SyncVectorEnv

        major = int(gymnasium.__version__.split(".")[0])
        if major < 1:
            raise VectorRefused(
                f"vector environments need gymnasium >= 1.0 in the image (it has "
                f"{gymnasium.__version__}, whose autoreset semantics differ); use an image "
                "with gymnasium 1.x, or step single environments (get_environment)")
        from gymnasium.vector import AutoresetMode

        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise VectorRefused(f"the number of environments must be an int >= 1, not {count!r}")
        envs = [make_one() for _ in range(count)]
        self.vector = SyncVectorEnv([(lambda e=e: e) for e in envs],
                                    autoreset_mode=AutoresetMode(autoreset_mode),
                                    copy=False)  # the codec copies the batch into the reply
        self.observation_space = self.vector.single_observation_space
        self.action_space = self.vector.single_action_space
        self.metadata = {key: value for key, value in self.vector.metadata.items()
                         if key != "autoreset_mode"}  # an enum; the host adds its own
        self.render_mode = self.vector.render_mode
        self.spec = None
        self._observations = None  # the last batch returned

    def reset(self, *, seed=None, options=None):
        mask = (options or {}).get("reset_mask")
        if isinstance(mask, numpy.ndarray) and mask.dtype == numpy.bool_ and not mask.any():
            # This server's share of a partial reset names none of its envs (the host checked
            # that the whole mask names some): they keep their observations and add no info.
            return self._observations, {}
        obs, infos = self.vector.reset(seed=seed, options=options)
        self._observations = obs
        return obs, pack_objects(infos)

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = self.vector.step(actions)
        self._observations = obs  # SyncVectorEnv's own batch (copy=False), current after each call
        return obs, rewards, terminations, truncations, pack_objects(infos)

    def get_attr(self, name: str) -> tuple:
        return self.vector.get_attr(name)

    def set_attr(self, name: str, values: Any) -> None:
        self.vector.set_attr(name, values)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        return self.vector.call(name, *args, **kwargs)

    def call_at(self, indices: list[int], name: str, *args: Any, **kwargs: Any) -> tuple:
        """`call` for the envs at `indices` only (SyncVectorEnv.call's rules), in that order."""
        results = []
        for index in indices:
            function = self.vector.envs[index].get_wrapper_attr(name)
            results.append(function(*args, **kwargs) if callable(function) else function)
        return tuple(results)

    def set_attr_at(self, indices: list[int], name: str, values: list) -> None:
        """`set_attr` for the envs at `indices` only, one value each."""
        for index, value in zip(indices, values, strict=True):
            self.vector.envs[index].set_wrapper_attr(name, value)

    def render(self):
        return self.vector.render()

    def close(self) -> None:
        self.vector.close()
