"""The private socket directory: created 0700, tightened if loose, refused if not ours."""

from __future__ import annotations

import os
import stat

import pytest

from dacbench_remote.errors import DacbenchRemoteError
from dacbench_remote.sockets import MAX_SOCKET_PATH, new_socket_path, socket_dir


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
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory owned by another user")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)  # nobody
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(foreign))
    with pytest.raises(DacbenchRemoteError) as info:
        socket_dir()
    assert "not a directory owned by you" in str(info.value) and str(foreign) in str(info.value)


def test_socket_path_over_the_unix_limit_says_what_to_do(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 100)
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(deep))
    with pytest.raises(DacbenchRemoteError) as info:
        new_socket_path()
    assert f"{MAX_SOCKET_PATH}-byte limit" in str(info.value)
    assert "DACBENCH_REMOTE_SOCKET_DIR" in str(info.value)


def test_socket_paths_are_fresh_and_short(tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path))
    first, second = new_socket_path(), new_socket_path()
    assert first != second and first.parent == second.parent == tmp_path
    assert len(str(first)) < MAX_SOCKET_PATH
