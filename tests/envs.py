"""Small real envs for tests and benchmarks, importable by a server as `tests.envs:NAME`."""

from __future__ import annotations

import os
import random
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


class EnvironEnv(SlowEnv):
    """Reports the server's environment variables in reset's info (env_str/env tests)."""

    def __init__(self):
        super().__init__(delay=0.0)

    def reset(self, *, seed=None, options=None):
        import os

        observation, _ = super().reset(seed=seed)
        return observation, {k: v for k, v in os.environ.items() if k.startswith("DR_")}


def make_environ_env():
    return EnvironEnv()


class CountingEnv(gymnasium.Env):
    """The observation counts steps, and step(a) sleeps `a` seconds and returns reward `a`.

    Each reply shows which call it answers. With `started_path`, each step first writes its
    number there (render() writes "render"), so a test can interrupt the host exactly while the
    server is in that call.
    """

    def __init__(self, started_path: str | None = None, render_delay: float = 0.0):
        self.observation_space = gymnasium.spaces.Box(0, 1_000_000, (1,), np.int64)
        self.action_space = gymnasium.spaces.Box(0.0, 60.0, (), np.float64)
        self.started_path = started_path
        self.render_delay = render_delay
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.array([0]), {"t": 0}

    def step(self, action):
        self._t += 1
        self._started(str(self._t))
        time.sleep(float(action))
        return np.array([self._t]), float(action), False, False, {"t": self._t}

    def render(self):
        """The step count, after `render_delay` seconds (a slow control call)."""
        self._started("render")
        time.sleep(self.render_delay)
        return np.array([self._t])

    def _started(self, what: str) -> None:
        if self.started_path:
            with open(self.started_path, "w") as handle:
                handle.write(what)


class BadRepliesEnv(CountingEnv):
    """step(1) returns a cyclic info dict, step(2) an object the codec refuses; so does render()."""

    def step(self, action):
        observation, _, terminated, truncated, info = super().step(0.0)
        if action == 1:
            info["self"] = info
        elif action == 2:
            info["handle"] = object()
        return observation, float(action), terminated, truncated, info

    def render(self):
        return {"frame": object()}


class FailingCloseEnv(CountingEnv):
    """Its close() raises, like a benchmark whose cleanup fails."""

    def close(self):
        raise RuntimeError("close failed on purpose")


class _OpaqueSpace(gymnasium.spaces.Space):
    """A space class the wire format does not know."""


class UnsendableSpaceEnv(CountingEnv):
    """Its observation space cannot cross to the host."""

    def __init__(self):
        super().__init__()
        self.observation_space = _OpaqueSpace()


def make_counting_env(**kwargs):
    return CountingEnv(**kwargs)


def make_bad_replies_env():
    return BadRepliesEnv()


def make_failing_close_env():
    return FailingCloseEnv()


def make_unsendable_space_env():
    return UnsendableSpaceEnv()


# What LeakyEnv does to its process; a fresh (or freshly forked) server starts from zero.
_LEAKS = {"resets": 0}


class LeakyEnv(gymnasium.Env):
    """Mutates module globals, the global RNGs and starts a thread; observations reveal any of it
    that was already there: [resets in this process, leaked threads alive, environ already set].

    (The global RNGs it reseeds cannot reveal a leak: the server seeds them on reset(seed).)"""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(0, 1_000_000, (3,), np.int64)
        self.action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        import random
        import threading

        super().reset(seed=seed)
        seeded_before = int(os.environ.get("DACBR_LEAKY_ENV") == "1")
        os.environ["DACBR_LEAKY_ENV"] = "1"
        _LEAKS["resets"] += 1
        leaked = sum(t.name == "leaky-env" for t in threading.enumerate())
        threading.Thread(target=time.sleep, args=(3600,), name="leaky-env", daemon=True).start()
        random.seed(_MARK)
        np.random.seed(_MARK)
        self._seen = [_LEAKS["resets"], leaked, seeded_before]
        return np.array(self._seen), {}

    def step(self, action):
        """One step; the reward spells the reset's observation, so results show leaks too."""
        resets, leaked, seen = self._seen
        return np.array(self._seen), float(resets + 10 * leaked + 100 * seen), True, False, {}


_MARK = 4242


def make_leaky_env():
    return LeakyEnv()


class GlobalDrawsEnv(gymnasium.Env):
    """Draws from the process-global RNGs (numpy's legacy one and `random`) when it is built,
    without any seed, and reports the draws in every reset's info: a server's inherited RNG
    state shows there."""

    observation_space = gymnasium.spaces.Box(0, 1, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self):
        self.draws = {"numpy": float(np.random.random()), "random": random.random(),
                      "pid": os.getpid()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), dict(self.draws)

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, dict(self.draws)


def make_global_draws_env():
    return GlobalDrawsEnv()


class OddInfoEnv(gymnasium.Env):
    """Episodes of 2 + seed % 3 steps; only an env reset with an odd seed (env i of a vector env
    reset with seed 0) reports extra info keys, and only on the step that terminates: a float,
    an int array and a nested dict. A reset reports its `tag` option, whole, when given one."""

    observation_space = gymnasium.spaces.Box(-10, 10, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(3)

    def __init__(self):
        self.odd, self.length, self.t = False, 2, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.odd, self.length = seed % 2 == 1, 2 + seed % 3
        self.t = 0
        info = {"t": 0}
        if options and "tag" in options:
            info["tag"] = options["tag"]
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), info

    def step(self, action):
        self.t += 1
        terminated = self.t >= self.length
        info: dict = {"t": self.t}
        if terminated and self.odd:
            info["odd_score"] = float(action) + 0.5
            info["odd_counts"] = np.array([self.t, int(action)], dtype=np.int32)
            info["odd_nested"] = {"action": int(action), "flag": True}
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return obs, float(action), terminated, False, info


def make_odd_info_env():
    return OddInfoEnv()



def make_segfaulting_env(at_step: int = 3):
    """CartPole whose server process segfaults (a real SIGSEGV, as a crashing C extension
    would) in step number `at_step` of each episode."""
    import ctypes

    class Segfaulting(gymnasium.Wrapper):
        def reset(self, **kwargs):
            self.steps = 0
            return self.env.reset(**kwargs)

        def step(self, action):
            self.steps += 1
            if self.steps == at_step:
                ctypes.string_at(0)  # reads address 0: SIGSEGV
            return self.env.step(action)

    return Segfaulting(gymnasium.make("CartPole-v1"))


def make_logged_cartpole(log: str | None = None, tag: str = ""):
    """CartPole-v1; with `log`, each creation appends "PID TAG" there (which process made it)."""
    if log:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {tag}\n")
    return gymnasium.make("CartPole-v1")
