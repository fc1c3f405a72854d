"""Agents and envs for sweep tests, imported by trial workers and servers as `tests.integration...`.

`counting_agent` appends one line per trial execution to $DACBR_TEST_COUNTER, so tests can count
executions independently of the sweep's own bookkeeping.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from dacbench_remote.host.agents import RandomAgent
from tests.envs import SlowEnv

COUNTER_ENV = "DACBR_TEST_COUNTER"
ACT_DELAY_ENV = "DACBR_TEST_ACT_DELAY"


class _SlowRandomAgent(RandomAgent):
    def __init__(self, env, seed, delay: float):
        super().__init__(env, seed)
        self.delay = delay

    def act(self, state, reward):
        time.sleep(self.delay)
        return super().act(state, reward)


def counting_agent(env, seed):
    """A seeded random agent that records '<run id> <trial id>' when a trial creates it."""
    counter = os.environ.get(COUNTER_ENV)
    if counter:
        run_id = os.environ.get("DACBR_SWEEP_RUN_ID", "?")
        line = f"{run_id} {os.environ.get('DACBR_SWEEP_TRIAL', '?')}\n"
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return _SlowRandomAgent(env, seed, float(os.environ.get(ACT_DELAY_ENV, "0")))


def make_failing_env(message: str = "benchmark exploded on purpose"):
    """A benchmark whose construction raises, like a DACBench benchmark with a broken config."""
    raise RuntimeError(message)


def make_stuck_env(pidfile: str, delay: float = 600.0):
    """A benchmark that hangs in step(); records the server's pid so tests can check its end."""
    Path(pidfile).write_text(str(os.getpid()))
    return SlowEnv(delay=delay)


def make_server_killing_env():
    """Kills its own server process in the first step (a segfaulting benchmark, say)."""
    import gymnasium
    import numpy as np

    class ServerKillingEnv(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(0, 1, (1,), np.float32)
        action_space = gymnasium.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(1, np.float32), {}

        def step(self, action):
            os.kill(os.getpid(), signal.SIGKILL)

    return ServerKillingEnv()


def _record_global_draws(path: str, who: str) -> None:
    """Append '<who> <numpy draw> <random draw> <pid>': unseeded draws from the global RNGs."""
    import random

    import numpy as np

    line = f"{who} {np.random.random()!r} {random.random()!r} {os.getpid()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def global_draws_agent(env, seed):
    """A seeded random agent that first draws, unseeded, from the worker's global RNGs."""
    _record_global_draws(os.environ[COUNTER_ENV], "agent")
    return RandomAgent(env, seed)


def make_global_draws_env(record: str):
    """CartPole, built after an unseeded draw from the server's global RNGs (recorded in
    `record`): no seed reaches them before the env is built."""
    import gymnasium

    _record_global_draws(record, "env")
    return gymnasium.make("CartPole-v1")


def global_draws(path: Path) -> dict[str, list[tuple[float, float, int]]]:
    """The draws recorded in `path`, by who drew them: (numpy draw, random draw, pid) each."""
    found: dict[str, list[tuple[float, float, int]]] = {}
    for line in path.read_text().splitlines():
        who, numpy_draw, random_draw, pid = line.split()
        found.setdefault(who, []).append((float(numpy_draw), float(random_draw), int(pid)))
    return found


def server_killing_agent(env, seed):
    """SIGKILLs its env's server (local runtime: a real pid) the first time any trial makes
    it, as the OOM killer would; the marker file next to $DACBR_TEST_COUNTER says it happened.
    Every creation is counted in the counter file."""
    counter = Path(os.environ[COUNTER_ENV])
    with open(counter, "a") as handle:
        handle.write(f"{os.environ.get('DACBR_SWEEP_TRIAL', '?')}\n")
    marker = counter.with_suffix(".server-killed")
    if not marker.exists():
        marker.write_text(str(env.connection.server_facts["pid"]))
        os.kill(env.connection.server_facts["pid"], signal.SIGKILL)
    return RandomAgent(env, seed)


def supervisor_killing_agent_once(env, seed):
    """supervisor_killing_agent the first time (marker next to $DACBR_TEST_COUNTER), then a
    random agent: a node that died once."""
    marker = Path(os.environ[COUNTER_ENV]).with_suffix(".task-killed")
    if marker.exists():
        return RandomAgent(env, seed)
    marker.write_text("killed")
    return supervisor_killing_agent(env, seed)


def server_socket_agent(env, seed):
    """Records the name of its server's control socket in $DACBR_TEST_COUNTER, then acts
    slowly enough ($DACBR_TEST_ACT_DELAY) that its supervisor looks at the processes."""
    with open(os.environ[COUNTER_ENV], "a") as handle:
        handle.write(f"{Path(env.connection.socket_path).name}\n")
    return _SlowRandomAgent(env, seed, float(os.environ.get(ACT_DELAY_ENV, "0")))


# A module global that a trial's agent changes: a warm trial's worker, forked from a host that
# never ran a trial, must always find it untouched.
AGENTS_MADE = [0]


def global_reading_agent(env, seed):
    """Records '<agents made before> <pid> <parent pid>' in $DACBR_TEST_COUNTER, then counts."""
    line = f"{AGENTS_MADE[0]} {os.getpid()} {os.getppid()}\n"
    AGENTS_MADE[0] += 1
    fd = os.open(os.environ[COUNTER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return RandomAgent(env, seed)


def host_killing_agent(env, seed):
    """Kills the process that forked this trial's worker (the warm worker host), once: the
    marker file next to $DACBR_TEST_COUNTER says it happened."""
    marker = Path(os.environ[COUNTER_ENV]).with_suffix(".host-killed")
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    if b"--host" not in parent:  # never kill a driver (or pytest) that started us directly
        raise RuntimeError(f"this worker was not forked by a worker host: {parent}")
    if not marker.exists():
        marker.write_text(str(os.getppid()))
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)  # the host's death takes this worker with it (PR_SET_PDEATHSIG)
    return RandomAgent(env, seed)


def supervisor_killing_agent(env, seed):
    """SIGKILLs the Slurm task that runs this trial (the process that supervises its worker), so
    the task ends without recording an outcome, as a node failure would."""
    supervisor = int(os.environ["DACBR_SWEEP_SUPERVISOR_PID"])
    argv = Path(f"/proc/{supervisor}/cmdline").read_bytes().split(b"\0")
    if b"submitit.core._submit" not in argv:  # never kill a driver (or pytest) on this machine
        raise RuntimeError(f"this trial is not run by a Slurm task: {argv}")
    os.kill(supervisor, signal.SIGKILL)
    time.sleep(30)  # its death takes this worker with it (PR_SET_PDEATHSIG)
    return RandomAgent(env, seed)
