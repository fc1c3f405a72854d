"""Small file mechanisms, each written once: replacing a file atomically, the sha256 of a file,
an flock held for a block, and a directory private to this user. Standard library only (and the
error tree), so that any module may import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UnsafeDirectory

CHUNK = 1 << 20


# --- atomic writes --------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, durable: bool = True,
                  perms: int = 0o600) -> Iterator[Path]:
    """A new, empty temporary file beside `path` for the block to fill (by name: open it, or hand
    it to a program). When the block ends without an exception the file replaces `path` in one
    rename, after an fsync if `durable`; otherwise it is removed. Readers see the old file or the
    new one, never half of one.

    `perms` are the new file's permission bits (less the umask, as with open(2)).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path, perms)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Replace `path` by `text` atomically (see atomic_output).

    `durable=False` skips the fsync, for bookkeeping that a crash may lose (it is rewritten).
    """
    with atomic_output(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, value: Any, durable: bool = True) -> None:
    """Replace `path` by `value` as indented JSON with sorted keys, atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n", durable)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (however it was written: by us, or by another program)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temp_file(path: Path, perms: int) -> Path:
    # Hidden (a leading dot) and in the same directory, so that the rename never crosses a
    # filesystem and directory listings that skip dot files never see it.
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, perms))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a fresh temporary file beside {path}")


# --- hashing --------------------------------------------------------------------------------

def sha256_file(path: str | os.PathLike, *, limit: int | None = None) -> str:
    """Hex sha256 of a file (or of its first `limit` bytes), read in chunks."""
    return hash_file(path, limit=limit).hexdigest()


def hash_file(path: str | os.PathLike, digest: Any = None, *, limit: int | None = None) -> Any:
    """`digest` (a new sha256 by default) fed the file's bytes, or its first `limit` bytes; for
    callers that go on hashing what they append."""
    digest = hashlib.sha256() if digest is None else digest
    remaining = limit
    with open(path, "rb") as handle:
        while remaining is None or remaining > 0:
            block = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest


# --- locks ----------------------------------------------------------------------------------

@contextlib.contextmanager
def locked(path: str | os.PathLike, *, blocking: bool = True,
           on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if missing) for the block; yields True.

    With `blocking=False` it yields False at once when another process holds the lock (the
    block then runs without it). `on_wait` is called before waiting for a busy lock. The lock
    goes with the block, or with the process.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:
        # Someone else's lock file in a shared directory: flock needs no write access.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = False
        except BlockingIOError:
            busy = True
        if busy and not blocking:
            yield False
            return
        if busy:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            # Unlocked explicitly: a child forked meanwhile shares the descriptor and the lock.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- private directories --------------------------------------------------------------------

def user_runtime_dir(name: str) -> Path:
    """Where this user's directory `name` goes: in $XDG_RUNTIME_DIR when that is writable, else
    `name`-UID in the system's temporary directory."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.access(runtime_dir, os.W_OK):
        return Path(runtime_dir) / name
    return Path(tempfile.gettempdir()) / f"{name}-{os.getuid()}"


def private_dir(path: str | os.PathLike, what: str, remedy: str) -> Path:
    """`path` as a directory only this user can enter (0700; created with its parents).

    Raises:
        UnsafeDirectory: `path` exists but is not a directory of this user; the message names
            it as `what` and says `remedy`.
    """
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UnsafeDirectory(f"{what} {path} is not a directory owned by you; {remedy}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path
