"""A server's main loop (server/serve.py): one thread accepts data connections, hands control
connections to Pyro5's pool and watches the lifeline; every way to stop the server ends the
process soon and leaves none of its sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from dacbench_remote._sys.procfs import wait_until
from dacbench_remote._sys.sockets import DATA_SUFFIX, new_socket_path, remove_socket_files
from dacbench_remote.host.client import ServerConnection

ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def server():
    path = new_socket_path("loop")
    proc = subprocess.Popen([sys.executable, "-m", "dacbench_remote.server", "--socket",
                             str(path), "--exit-on-stdin-close"], stdin=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT)
    assert wait_until(lambda: Path(str(path) + DATA_SUFFIX).exists(), 20.0)
    yield proc, path
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    remove_socket_files(path)


def test_two_clients_step_and_call_at_once_exactly_like_gymnasium(server):
    """Data channels and control calls of two connections, served side by side."""
    _proc, path = server
    actions = np.random.default_rng(3).integers(0, 2, size=200)
    results: dict[int, list] = {}

    def client(seed: int) -> None:
        connection = ServerConnection(path, timeout=30)
        env = connection.make_env("tests.envs:make_logged_cartpole")
        local = gymnasium.make("CartPole-v1")
        pairs = [(env.reset(seed=seed)[0], local.reset(seed=seed)[0])]
        for action in actions:
            remote, here = env.step(int(action)), local.step(int(action))
            pairs.append((remote[0], here[0]))
            assert env.spec.id == "CartPole-v1"  # a control call between the steps
            if here[2] or here[3]:
                break
        env.close()
        connection.close()
        results[seed] = pairs

    threads = [threading.Thread(target=client, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [1, 2]
    for pairs in results.values():
        assert len(pairs) > 5
        for remote, here in pairs:
            assert remote.dtype == here.dtype and remote.tolist() == here.tolist()


@pytest.mark.parametrize("stop", ["shutdown call", "SIGTERM", "SIGINT", "lifeline closed"])
def test_every_way_to_stop_ends_the_server_and_removes_its_sockets(server, stop):
    proc, path = server
    connection = ServerConnection(path, timeout=30)
    env = connection.make_env("tests.envs:make_logged_cartpole")
    env.reset(seed=0)  # a data channel is open and idle while the server stops
    if stop == "shutdown call":
        connection.shutdown()
    elif stop == "lifeline closed":
        proc.stdin.close()
    else:
        proc.send_signal(signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert not path.exists() and not Path(str(path) + DATA_SUFFIX).exists()
