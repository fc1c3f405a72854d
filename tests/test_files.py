"""Atomic file replacement, file hashing and flock-held blocks (dacbench_remote._sys.files)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from dacbench_remote._sys.files import (
    atomic_output,
    atomic_write_json,
    atomic_write_text,
    hash_file,
    locked,
    sha256_file,
)


def test_atomic_output_replaces_the_file_when_the_block_ends(tmp_path: Path):
    target = tmp_path / "new" / "out.bin"  # the folder is created
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.bin.")
        assert tmp.read_bytes() == b""
        tmp.write_bytes(b"new")
        assert not target.exists()  # nobody sees the file before it is complete
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["out.bin"]


def test_atomic_output_keeps_the_old_file_when_the_block_fails(tmp_path: Path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="half-way"), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("half-way")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # the temporary file is gone


def test_atomic_output_sets_the_permissions_less_the_umask(tmp_path: Path):
    previous = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "image.sif", perms=0o755) as tmp:
            tmp.write_bytes(b"x")
        with atomic_output(tmp_path / "state.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "image.sif").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600


def test_atomic_write_text_and_json(tmp_path: Path):
    atomic_write_text(tmp_path / "a.txt", "één\n", durable=False)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "één\n"
    atomic_write_json(tmp_path / "b.json", {"b": 1, "a": [2]})
    assert (tmp_path / "b.json").read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": [2], "b": 1}


def test_sha256_of_a_file_its_prefix_and_a_continued_digest(tmp_path: Path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read
    path = tmp_path / "data"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, limit=1000) == hashlib.sha256(data[:1000]).hexdigest()
    assert sha256_file(path, limit=10 << 20) == hashlib.sha256(data).hexdigest()
    digest = hash_file(path)
    digest.update(b"appended")
    assert digest.hexdigest() == hashlib.sha256(data + b"appended").hexdigest()


def test_a_held_lock_is_reported_busy_without_waiting(tmp_path: Path):
    lock = tmp_path / "x.lock"
    with locked(lock) as held:
        assert held and lock.exists()
        with locked(lock, blocking=False) as free:  # another descriptor: another holder
            assert free is False
    with locked(lock, blocking=False) as free:
        assert free is True


def test_a_blocking_lock_calls_on_wait_then_waits_for_the_holder(tmp_path: Path):
    lock = tmp_path / "x.lock"
    events: list[str] = []
    holding = threading.Event()

    def holder() -> None:
        with locked(lock):
            holding.set()
            time.sleep(0.3)
            events.append("released")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    with locked(lock, on_wait=lambda: events.append("waiting")) as held:
        events.append("acquired")
        assert held
    thread.join()
    assert events == ["waiting", "released", "acquired"]


def test_someone_elses_lock_file_is_opened_read_only(tmp_path: Path, monkeypatch):
    lock = tmp_path / "shared.lock"
    lock.touch()
    real_open = os.open

    def open_as_another_user(path, flags, *args):
        if Path(path) == lock and flags & os.O_ACCMODE != os.O_RDONLY:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_as_another_user)
    with locked(lock) as held:
        assert held
        monkeypatch.undo()
        with locked(lock, blocking=False) as free:
            assert free is False  # a read-only descriptor locks just as well
