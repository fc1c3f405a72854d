"""Small real envs for tests and benchmarks, importable by a server as `tests.envs:NAME`."""

from __future__ import annotations

import time

import gymnasium
import numpy as np


class ImageEnv(gymnasium.Env):
    """(84, 84, 3) uint8 observations, like an Atari frame; 100 steps per episode."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, episode_length: int = 100):
        self.observation_space = gymnasium.spaces.Box(0, 255, (84, 84, 3), np.uint8)
        self.action_space = gymnasium.spaces.Discrete(4)
        self.render_mode = render_mode
        self.episode_length = episode_length
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._frame = self.np_random.integers(0, 256, (84, 84, 3), dtype=np.uint8)
        return self._frame.copy(), {"t": 0}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        self._t += 1
        self._frame = np.roll(self._frame, int(action) + 1, axis=1)
        truncated = self._t >= self.episode_length
        return self._frame.copy(), float(action), False, truncated, {"t": self._t}

    def render(self):
        return self._frame.copy()


class SlowEnv(gymnasium.Env):
    """Each step sleeps `delay` seconds: for deadlines and kills during a call."""

    def __init__(self, delay: float = 5.0):
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.delay = delay

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        time.sleep(self.delay)
        return np.zeros(2, np.float32), 0.0, False, False, {}


class NotEncodableInfoEnv(SlowEnv):
    """Returns an info value the wire format cannot carry."""

    def __init__(self):
        super().__init__(delay=0.0)

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {"handle": object()}


def make_image_env(**kwargs):
    return ImageEnv(**kwargs)


def make_slow_env(**kwargs):
    return SlowEnv(**kwargs)


def make_not_encodable_env():
    return NotEncodableInfoEnv()
