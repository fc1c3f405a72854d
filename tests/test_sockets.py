"""The private socket root (created 0700, tightened if loose, refused if not ours) and the private
per-server directories inside it; server ids and attaching by id."""

from __future__ import annotations

import os
import re
import socket
import stat
from pathlib import Path

import pytest

from dacbench_remote._sys.sockets import (
    DATA_SUFFIX,
    MAX_SOCKET_PATH,
    check_private_socket_dir,
    new_socket_path,
    remove_socket_files,
    socket_dir,
    socket_id_of,
    socket_path_for_id,
)
from dacbench_remote.errors import BadConfig, UnsafeDirectory
from tests.needs import need_root


def test_socket_dir_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path / "socks"))
    directory = socket_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert directory.stat().st_uid == os.getuid()


def test_loose_socket_dir_is_tightened(tmp_path, monkeypatch):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(loose))
    assert stat.S_IMODE(socket_dir().stat().st_mode) == 0o700


def test_socket_dir_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    need_root("creating a directory owned by another user")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)  # nobody
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(foreign))
    with pytest.raises(UnsafeDirectory) as info:
        socket_dir()
    assert "not a directory owned by you" in str(info.value) and str(foreign) in str(info.value)


def test_socket_path_over_the_unix_limit_says_what_to_do(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 100)
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(deep))
    with pytest.raises(BadConfig) as info:
        new_socket_path()
    assert f"{MAX_SOCKET_PATH}-byte limit" in str(info.value)
    assert "DACBENCH_REMOTE_SOCKET_DIR" in str(info.value)


def test_socket_paths_are_fresh_and_short(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path))
    first, second = new_socket_path(), new_socket_path()
    assert first != second and first.parent.parent == second.parent.parent == tmp_path
    assert len(str(first) + DATA_SUFFIX) <= MAX_SOCKET_PATH


def test_each_server_gets_its_own_private_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path / "socks"))
    old_umask = os.umask(0)  # a careless umask must not loosen it
    try:
        paths = [new_socket_path(), new_socket_path("bench")]
    finally:
        os.umask(old_umask)
    for path in paths:
        assert path.name == "ctl.sock" and not path.exists()
        info = path.parent.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
        assert path.parent.parent == socket_dir()
    assert re.fullmatch(r"srv-[0-9a-f]{8}", paths[0].parent.name)
    assert re.fullmatch(r"bench-[0-9a-f]{8}", paths[1].parent.name)
    assert sorted(p.name for p in socket_dir().iterdir()) == sorted(p.parent.name for p in paths)


def _bind(path: Path, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    if listen:
        sock.listen(1)
    return sock


def test_socket_id_finds_the_running_server(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path))
    path = new_socket_path()
    with _bind(path, listen=True):
        socket_id = socket_id_of(path)
        assert socket_id == path.parent.name
        assert socket_path_for_id(socket_id) == path


@pytest.mark.parametrize("bad", ["../etc", "srv-1234567", "srv-ABCDEF12", "srv-12345678/..", ""])
def test_malformed_socket_id_is_refused_without_touching_the_disk(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path))
    with pytest.raises(BadConfig) as info:
        socket_path_for_id(bad)
    assert repr(bad) in str(info.value) and "dacbench-remote ps" in str(info.value)


def test_an_id_without_a_running_server_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path))
    dead = new_socket_path()
    _bind(dead, listen=False).close()  # what a killed server leaves: a socket nobody answers
    for socket_id in ("srv-00000000", dead.parent.name):
        with pytest.raises(BadConfig) as info:
            socket_path_for_id(socket_id)
        message = str(info.value)
        assert f"no running server with id '{socket_id}'" in message
        assert "dacbench-remote ps" in message


def test_socket_id_of_a_path_outside_the_layout_is_refused(tmp_path):
    with pytest.raises(BadConfig, match="not in a per-server socket directory"):
        socket_id_of(tmp_path / "x.sock")


def test_removing_the_sockets_removes_the_server_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path))
    path = new_socket_path()
    for sock in (_bind(path, False), _bind(Path(f"{path}{DATA_SUFFIX}"), False)):
        sock.close()
    remove_socket_files(path)
    assert not path.parent.exists() and tmp_path.exists()
    remove_socket_files(path)  # twice is harmless
    # Something else in the directory: not ours to delete.
    kept = new_socket_path()
    (kept.parent / "note").write_text("x")
    remove_socket_files(kept)
    assert kept.parent.exists()
    # A socket outside the layout: its directory is never removed.
    _bind(tmp_path / "loose.sock", False).close()
    remove_socket_files(tmp_path / "loose.sock")
    assert tmp_path.exists() and not (tmp_path / "loose.sock").exists()


def test_clearing_stale_sockets_before_listening_keeps_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path))
    path = new_socket_path()
    for sock in (_bind(path, False), _bind(Path(f"{path}{DATA_SUFFIX}"), False)):
        sock.close()  # what a crashed server leaves at its own path
    remove_socket_files(path, keep_dir=True)
    assert path.parent.is_dir() and os.listdir(path.parent) == []
    _bind(path, True).close()  # the server can listen there again


def test_a_shared_socket_directory_is_refused_for_a_container(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    _bind(shared / "other.sock", False).close()  # another server's socket, as in the old layout
    with pytest.raises(BadConfig) as info:
        check_private_socket_dir(shared / "mine.sock")
    assert "holds other.sock" in str(info.value) and "new_socket_path" in str(info.value)
    own = tmp_path / "own"
    own.mkdir()
    _bind(own / "ctl.sock", False).close()  # a stale socket of its own is fine
    check_private_socket_dir(own / "ctl.sock")


def test_a_missing_socket_directory_is_refused_for_a_container(tmp_path):
    with pytest.raises(UnsafeDirectory, match=f"socket directory {tmp_path / 'gone'} does not exist"):
        check_private_socket_dir(tmp_path / "gone" / "ctl.sock")
