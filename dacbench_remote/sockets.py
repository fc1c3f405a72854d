"""Private per-user directory for server sockets (mode 0700), and short socket paths inside it."""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path

from .channel import DATA_SUFFIX
from .errors import DacbenchRemoteError

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def socket_dir() -> Path:
    """Return this user's socket directory, creating it 0700 and refusing one that is not ours."""
    override = os.environ.get("DACBENCH_REMOTE_SOCKET_DIR")
    if override:
        path = Path(override)
    else:
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
        if runtime_dir and os.access(runtime_dir, os.W_OK):
            path = Path(runtime_dir) / "dacbench-remote"
        else:
            path = Path(tempfile.gettempdir()) / f"dacbench-remote-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DacbenchRemoteError(
            f"socket directory {path} is not a directory owned by you; remove it or set "
            "DACBENCH_REMOTE_SOCKET_DIR to a private directory"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def new_socket_path(prefix: str = "srv") -> Path:
    """A fresh, unused control-socket path in the private directory, short enough for AF_UNIX."""
    path = socket_dir() / f"{prefix}-{secrets.token_hex(4)}.sock"
    longest = str(path) + DATA_SUFFIX
    if len(longest.encode()) > MAX_SOCKET_PATH:
        raise DacbenchRemoteError(
            f"socket path {longest!r} is longer than the {MAX_SOCKET_PATH}-byte limit of UNIX "
            "sockets; set DACBENCH_REMOTE_SOCKET_DIR to a shorter directory (e.g. /tmp/dr)"
        )
    return path


def remove_socket_files(control_path: Path) -> None:
    """Remove a server's control and data sockets if they are still there."""
    for path in (Path(control_path), Path(str(control_path) + DATA_SUFFIX)):
        path.unlink(missing_ok=True)
