"""`ps`/`cleanup` for real: orphaned servers, dead sockets, stale mounts, broken extractions.

Each test uses its own socket directory (DACBENCH_REMOTE_SOCKET_DIR) so that cleaning up can
never touch servers that other tests run at the same time.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dacbench_remote._sys.sockets import new_socket_path
from dacbench_remote.host.servers import EMPTY_DIR_GRACE, cleanup_stale, list_servers
from dacbench_remote.images.sif import SifImage
from dacbench_remote.runtimes.base import SERVER_MODULE
from dacbench_remote.runtimes.rootfs import TMP_PREFIX, mount_base_dir
from tests.needs import need_fuse

from .runtime_images import STANDIN_SERVER, accepts, build_tiny_image, fuse_mounts, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    sockets = tmp_path / "sockets"
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(sockets))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    (tmp_path / "runtime").mkdir()
    return sockets


def _server_like(socket_path: Path, lifeline: bool) -> subprocess.Popen:
    """A process that looks like `python -m dacbench_remote.server` to ps (argv), stdin a pipe."""
    argv = [sys.executable, "-c", STANDIN_SERVER, SERVER_MODULE, "--socket", str(socket_path)]
    if lifeline:
        argv.append("--exit-on-stdin-close")
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               start_new_session=True)
    assert wait_until(lambda: accepts(socket_path), 30)
    return process


def test_ps_lists_a_server_with_its_lifeline_held():
    socket_path = new_socket_path()
    process = _server_like(socket_path, lifeline=True)
    try:
        servers = [s for s in list_servers() if s.pid == process.pid]
        assert len(servers) == 1
        server = servers[0]
        assert (server.runtime, server.socket, server.socket_alive, server.orphaned) == (
            "local", str(socket_path), True, False)
        assert abs(server.started - time.time()) < 120
        report = cleanup_stale()
        assert process.pid not in report.stopped and process.poll() is None
        assert str(socket_path) not in report.removed_sockets
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_cleanup_stops_a_server_whose_lifeline_is_gone():
    socket_path = new_socket_path()
    process = _server_like(socket_path, lifeline=False)  # it ignores its stdin closing
    process.stdin.close()  # as if the host had died
    try:
        [server] = [s for s in list_servers() if s.pid == process.pid]
        assert server.orphaned
        report = cleanup_stale()
        assert report.stopped == [process.pid]
        assert process.wait(timeout=10) is not None
        assert not socket_path.exists()
        assert f"stopped orphaned server {process.pid}" in report.lines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cleanup_removes_dead_sockets_and_keeps_live_ones(private_dirs):
    dead = new_socket_path()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(dead))  # bound, never listening, closed: what a killed server leaves
    dead_data = Path(f"{dead}.data")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(dead_data))
    listening = new_socket_path()
    old_layout = private_dirs / "srv-1a2b3c4d.sock"  # left loose by an older version
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(old_layout))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as alive:
        alive.bind(str(listening))
        alive.listen(1)
        (private_dirs / "notes.txt").write_text("not a socket")
        report = cleanup_stale()
        assert sorted(report.removed_sockets) == sorted([str(dead), str(dead_data),
                                                         str(old_layout)])
        assert not dead.parent.exists()  # the dead server's directory went with its sockets
        assert listening.exists() and (private_dirs / "notes.txt").exists()
    assert cleanup_stale().lines() == ["removed dead socket " + str(listening)]
    assert sorted(p.name for p in private_dirs.iterdir()) == ["notes.txt"]


def test_cleanup_removes_old_empty_server_dirs_but_not_one_still_starting(private_dirs):
    starting = new_socket_path().parent  # made before the image is unpacked: empty for a while
    abandoned = new_socket_path().parent  # its server removed its sockets, its host was killed
    long_ago = time.time() - EMPTY_DIR_GRACE - 60
    os.utime(abandoned, (long_ago, long_ago))
    kept = new_socket_path().parent
    os.utime(kept, (long_ago, long_ago))
    (kept / "notes.txt").write_text("not ours to delete")
    cleanup_stale()
    assert starting.is_dir() and kept.is_dir() and not abandoned.exists()


def test_cleanup_removes_unfinished_extractions_unless_one_is_running(tmp_path):
    cache = tmp_path / "rootfs"
    digest = "ab" * 32
    broken = cache / f"{TMP_PREFIX}{digest}-x1"
    (broken / "rootfs" / "usr").mkdir(parents=True)
    lock = cache / f"{digest}.lock"
    lock.touch()
    with open(lock) as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)  # an extraction in progress
        assert cleanup_stale(cache).removed_dirs == []
        assert broken.exists()
    assert cleanup_stale(cache).removed_dirs == [str(broken)]
    assert not broken.exists()


def test_cleanup_unmounts_squashfuse_mounts_left_by_a_dead_process(tmp_path):
    need_fuse()
    image = build_tiny_image(tmp_path, with_runscript=True)
    offset = SifImage.open(image).primary_partition().offset
    dead = subprocess.Popen(["true"])
    dead.wait()
    mount_point = mount_base_dir() / f"{dead.pid}-stale"
    mount_point.mkdir()
    subprocess.run(["squashfuse", "-o", f"offset={offset}", str(image), str(mount_point)],
                   check=True)
    assert any(str(mount_point) in line for line in fuse_mounts())
    live = mount_base_dir() / f"{os.getpid()}-mine"
    live.mkdir()
    report = cleanup_stale()
    assert report.unmounted == [str(mount_point)]
    assert not any(str(mount_point) in line for line in fuse_mounts())
    assert not mount_point.exists() and live.exists()  # a live owner's directory is kept
