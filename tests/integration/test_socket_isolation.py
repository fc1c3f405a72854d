"""A container sees only its own server's socket directory: it cannot reach the user's other
servers (issue 8), whether they run unsandboxed (local) or in another container.

The "attacker" is the stand-in server in a bwrap container (LIST and CONNECT show what it sees);
the victims are real servers: one local, one in a second container.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from dacbench_remote._sys.sockets import DATA_SUFFIX, new_socket_path, socket_dir
from dacbench_remote.runtimes.bwrap import CONTAINER_SOCKET_DIR, BwrapRuntime
from dacbench_remote.runtimes.local import LocalRuntime

from .runtime_images import accepts, talk, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rootfs_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rootfs-cache")


# Under /tmp the server directory appears inside at its host path; elsewhere under
# CONTAINER_SOCKET_DIR. Short roots: AF_UNIX paths are limited to 107 bytes.
@pytest.fixture(params=["/tmp", "/var/tmp"])
def private_root(request, monkeypatch) -> Path:
    root = Path(request.param) / f"dri-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _start(runtime, prefix: str):
    socket_path = new_socket_path(prefix)
    server = runtime.start(socket_path)
    both = (socket_path, Path(str(socket_path) + DATA_SUFFIX))
    ready = (lambda: accepts(socket_path)) if prefix == "attacker" else (
        lambda: all(accepts(p) for p in both))
    if not wait_until(lambda: not server.alive() or ready(), 60) or not server.alive():
        tail = server.output_tail()
        server.stop()
        pytest.fail(f"{prefix} server did not come up:\n{tail}")
    return server


def test_a_container_cannot_see_or_reach_the_users_other_servers(private_root, standin_image,
                                                                 rootfs_cache):
    def bwrap(**env):
        return BwrapRuntime(standin_image, use_fuse=False, extract_cache=rootfs_cache, env=env)

    servers = []
    try:
        servers.append(local := _start(LocalRuntime(), "local"))
        servers.append(boxed := _start(bwrap(), "boxed"))
        servers.append(attacker := _start(bwrap(DACBR_STANDIN="1"), "attacker"))
        # The attacker's own socket, as the server inside was told it (its --socket argument).
        own = talk(attacker.socket_path, "ARGV").split()[1]
        assert talk(attacker.socket_path, f"CONNECT {own}") == "connected"  # CONNECT works

        own_dir = Path(own).parent
        for victim in (local, boxed):
            assert accepts(victim.socket_path)  # alive and reachable from the host
            # Its host path, and where it would be if it shared our directory or its parent.
            victim_dir = victim.socket_path.parent
            candidates = {victim.socket_path, own_dir.parent / victim_dir.name / "ctl.sock",
                          own_dir / victim.socket_path.name} - {Path(own)}
            for path in candidates:
                for name in (str(path), f"{path}{DATA_SUFFIX}"):
                    answer = talk(attacker.socket_path, f"CONNECT {name}")
                    assert answer == "<error: No such file or directory>", (name, answer)
            assert talk(attacker.socket_path, f"LIST {victim_dir}") == \
                "<error: No such file or directory>"

        # Of the user's socket root, at most the attacker's own directory is visible inside.
        root = socket_dir()
        assert sorted(p.name for p in root.iterdir()) == sorted(
            s.socket_path.parent.name for s in servers)
        seen = talk(attacker.socket_path, f"LIST {root}")
        if str(private_root).startswith("/tmp/"):
            assert own_dir == attacker.socket_path.parent  # the same path on both sides
            assert seen == own_dir.name
        else:
            assert own_dir == Path(CONTAINER_SOCKET_DIR) / attacker.socket_path.parent.name
            assert seen == "<error: No such file or directory>"
            assert talk(attacker.socket_path, f"LIST {CONTAINER_SOCKET_DIR}") == own_dir.name
        assert talk(attacker.socket_path, f"LIST {own_dir}") == "ctl.sock"
    finally:
        for server in servers:
            server.stop()
    assert list(socket_dir().iterdir()) == []  # every server's directory went with it
