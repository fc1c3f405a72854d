"""The contract every runtime keeps, run against each one (as submitit tests each executor).

A runtime factory takes the pytest request and returns a fresh Runtime that starts the real
server; add a runtime with one line in RUNTIME_FACTORIES.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dacbench_remote._sys.sockets import DATA_SUFFIX, new_socket_path, socket_dir
from dacbench_remote.host.client import ServerConnection
from dacbench_remote.runtimes.apptainer import ApptainerRuntime
from dacbench_remote.runtimes.base import SERVER_MODULE, Runtime, ServerProcess
from dacbench_remote.runtimes.bwrap import BwrapRuntime
from dacbench_remote.runtimes.local import LocalRuntime
from tests.needs import need_apptainer, need_fuse

from .runtime_images import (
    accepts,
    processes_of,
    runtime_mounts,
    squashfuse_daemons,
    tree_of,
    wait_until,
)

pytestmark = pytest.mark.integration


STARTUP_TIMEOUT = 60.0


def _bwrap_extracted(request) -> Runtime:
    cache = request.getfixturevalue("shared_rootfs_cache")
    return BwrapRuntime(request.getfixturevalue("standin_image"), use_fuse=False,
                        extract_cache=cache)


def _bwrap_squashfuse(request) -> Runtime:
    need_fuse()
    return BwrapRuntime(request.getfixturevalue("standin_image"), use_fuse=True)


def _apptainer(request) -> Runtime:
    need_apptainer()
    return ApptainerRuntime(request.getfixturevalue("standin_image"))


def _local(request) -> Runtime:
    return LocalRuntime()


RUNTIME_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Runtime]] = {
    "local": _local,
    "bwrap-extracted": _bwrap_extracted,
    "bwrap-squashfuse": _bwrap_squashfuse,
    "apptainer": _apptainer,
}


@pytest.fixture(scope="module")
def shared_rootfs_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rootfs-cache")


@pytest.fixture(params=list(RUNTIME_FACTORIES))
def runtime(request) -> Runtime:
    return RUNTIME_FACTORIES[request.param](request)


@pytest.fixture
def started(runtime):
    """A started server that is up (both sockets accept), stopped after the test."""
    socket_path = new_socket_path("contract")
    server = runtime.start(socket_path)
    data = Path(str(socket_path) + DATA_SUFFIX)
    up = wait_until(lambda: not server.alive() or (accepts(socket_path) and accepts(data)),
                    STARTUP_TIMEOUT)
    if not (up and server.alive()):
        tail = server.output_tail()
        server.stop()
        pytest.fail(f"{runtime.name} server did not come up:\n{tail}")
    yield server
    server.stop()


def _assert_nothing_left(server: ServerProcess, tree: set[int]) -> None:
    assert wait_until(lambda: not (tree & set(processes_of(os.getuid()))), 10), \
        f"processes left: {tree & set(processes_of(os.getuid()))}"
    assert not server.socket_path.exists()
    assert not Path(str(server.socket_path) + DATA_SUFFIX).exists()
    assert not server.socket_path.parent.exists()  # the server's own directory goes too
    assert not runtime_mounts(), runtime_mounts()
    image = getattr(server.runtime, "image", None)
    if image is not None:
        assert wait_until(lambda: not squashfuse_daemons(image), 10), squashfuse_daemons(image)


def test_server_answers_a_real_client(started):
    connection = ServerConnection(started.socket_path, handshake_timeout=30)
    try:
        env = connection.make_env("gymnasium:CartPole-v1")
        observation, _info = env.reset(seed=3)
        assert observation.dtype == np.float32 and observation.shape == (4,)
        next_observation, reward, terminated, truncated, _ = env.step(1)
        assert next_observation.shape == (4,) and reward == 1.0
        assert not terminated and not truncated
        env.close()
    finally:
        connection.close()


def test_sockets_are_private_in_a_directory_of_their_own(started):
    directory = started.socket_path.parent
    assert directory.parent == socket_dir()
    assert sorted(p.name for p in directory.iterdir()) == ["ctl.sock", "ctl.sock" + DATA_SUFFIX]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, path
        assert info.st_uid == os.getuid()
    started.stop()
    assert not directory.exists()


def test_stop_leaves_no_process_socket_or_mount(started):
    tree = tree_of(started.pid)
    assert any(SERVER_MODULE in processes_of(os.getuid()).get(pid, "") for pid in tree)
    started.stop()
    started.stop()  # twice is harmless
    assert not started.alive()
    _assert_nothing_left(started, tree)


def test_closing_the_lifeline_makes_the_server_exit_on_its_own(started):
    tree = tree_of(started.pid)
    started.process.stdin.close()  # what the kernel does when the host dies
    assert started.wait_gone(15), "the server ignored its lifeline"
    # It exited by itself: sockets were removed by the server, not by stop().
    assert not started.socket_path.exists()
    started.stop()
    _assert_nothing_left(started, tree)


def test_server_killed_inside_is_noticed_and_cleaned_up(started):
    tree = tree_of(started.pid)
    commands = processes_of(os.getuid())
    inner = [pid for pid in tree if SERVER_MODULE in commands.get(pid, "")]
    assert inner, f"no {SERVER_MODULE} process under {started.pid}: {commands}"
    os.kill(max(inner), signal.SIGKILL)
    assert started.wait_gone(15), "the runtime did not exit when its server died"
    assert started.process.returncode != 0
    started.stop()
    _assert_nothing_left(started, tree)
