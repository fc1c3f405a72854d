"""Where server sockets live: a private per-user root (0700) holding one private directory per
server, so that a container, which gets only its own server's directory, cannot reach the others.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
from pathlib import Path

from ..errors import BadConfig, UnsafeDirectory
from .files import private_dir, user_runtime_dir

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
CONTROL_NAME = "ctl.sock"
# Appended to the control socket's path to name the data socket next to it.
DATA_SUFFIX = ".data"
# A server's id is the name of its directory: PREFIX-8HEX, e.g. srv-1f2e3d4c.
_SOCKET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*-[0-9a-f]{8}\Z")


def socket_dir() -> Path:
    """Return this user's socket root, creating it 0700 and refusing one that is not ours."""
    override = os.environ.get("DACBENCH_REMOTE_SOCKET_DIR")
    path = Path(override) if override else user_runtime_dir("dacbench-remote")
    return private_dir(path, "socket directory", "remove it or set DACBENCH_REMOTE_SOCKET_DIR "
                                                 "to a private directory")


def is_socket_id(name: str) -> bool:
    """True if `name` has the form of a server id (the name of a per-server directory)."""
    return bool(_SOCKET_ID.match(name))


def new_socket_path(prefix: str = "srv") -> Path:
    """A fresh private directory for one server (0700), and the control-socket path inside it.

    The data socket is the same path plus DATA_SUFFIX; both must fit AF_UNIX's limit.
    """
    if not is_socket_id(f"{prefix}-00000000"):
        raise ValueError(f"socket prefix {prefix!r} must be letters, digits and underscores")
    root = socket_dir()
    for _ in range(100):
        directory = root / f"{prefix}-{secrets.token_hex(4)}"
        path = directory / CONTROL_NAME
        longest = str(path) + DATA_SUFFIX
        if len(longest.encode()) > MAX_SOCKET_PATH:
            raise BadConfig(
                f"socket path {longest!r} is longer than the {MAX_SOCKET_PATH}-byte limit of "
                "UNIX sockets; set DACBENCH_REMOTE_SOCKET_DIR to a shorter directory "
                "(e.g. /tmp/dr)"
            )
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)  # whatever the umask
        return path
    raise UnsafeDirectory(f"could not create a fresh server directory in {root}")


def socket_id_of(control_path: str | os.PathLike) -> str:
    """The id of the server listening on `control_path` (from new_socket_path)."""
    name = Path(control_path).parent.name
    if not is_socket_id(name):
        raise BadConfig(
            f"{control_path} is not in a per-server socket directory; only servers started "
            "on a new_socket_path() have an id"
        )
    return name


def socket_path_for_id(socket_id: str) -> Path:
    """The control socket of the running server with id `socket_id` (see socket_id_of)."""
    if not isinstance(socket_id, str) or not is_socket_id(socket_id):
        raise BadConfig(
            f"{socket_id!r} is not a server id (they look like 'srv-1f2e3d4c'); "
            "`dacbench-remote ps` lists the running servers and their ids"
        )
    path = socket_dir() / socket_id / CONTROL_NAME
    if not socket_answers(path):
        raise BadConfig(
            f"no running server with id {socket_id!r}: nothing listens on {path}; "
            "`dacbench-remote ps` lists the running servers and their ids"
        )
    return path


def socket_answers(path: str | Path, timeout: float = 2.0) -> bool:
    """True if `path` is a UNIX socket that something accepts connections on."""
    path = Path(path)
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def check_private_socket_dir(control_path: str | os.PathLike) -> None:
    """Refuse to hand a container a socket directory that holds anything but this server's.

    Container runtimes bind the socket's directory whole; anything else in it (another server's
    socket) would be reachable from inside.
    """
    control = Path(control_path)
    own = {control.name, control.name + DATA_SUFFIX}
    try:
        others = sorted(set(os.listdir(control.parent)) - own)
    except FileNotFoundError:
        raise UnsafeDirectory(f"socket directory {control.parent} does not exist") from None
    if others:
        raise BadConfig(
            f"socket directory {control.parent} holds {', '.join(others[:3])}"
            f"{' ...' if len(others) > 3 else ''}: a container gets this whole directory, so "
            "each server needs its own (use dacbench_remote._sys.sockets.new_socket_path())"
        )


def remove_socket_files(control_path: str | os.PathLike, *, keep_dir: bool = False) -> None:
    """Remove a server's control and data sockets, then its directory once it is empty.

    `keep_dir=True` (a server about to listen, clearing a stale socket) leaves the directory.
    """
    control = Path(control_path)
    for path in (control, Path(str(control) + DATA_SUFFIX)):
        path.unlink(missing_ok=True)
    if not keep_dir and is_socket_id(control.parent.name):
        with contextlib.suppress(OSError):  # not empty (not ours to judge) or already gone
            control.parent.rmdir()
