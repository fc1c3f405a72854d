"""This user's servers on this machine (`dacbench-remote ps`) and the cleanup of what crashed
hosts left (`dacbench-remote cleanup`), read from /proc.

A server is found by its command line in /proc: `python -m dacbench_remote.server --socket ...`
(local), our bubblewrap launcher (bwrap) or `apptainer|singularity run ... --socket ...`.
A server is an orphan when nobody holds the write end of its stdin "lifeline" any more.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._sys.files import locked
from .._sys.procfs import ProcessRecord, argv_of, descendants, is_running, stat_fields, stop_records
from .._sys.sockets import DATA_SUFFIX, is_socket_id, remove_socket_files, socket_answers, socket_dir
from ..runtimes.apptainer import default_work_root
from ..runtimes.base import SERVER_MODULE
from ..runtimes.bwrap import LAUNCHER_NAME
from ..runtimes.rootfs import (
    TMP_PREFIX,
    default_rootfs_cache,
    force_rmtree,
    lazy_unmount,
    mount_base_dir,
    mountinfo_entries,
)

# An empty server directory this recent may belong to a server that is still starting (the
# directory is made before the image is unpacked): cleanup leaves it alone.
EMPTY_DIR_GRACE = 600.0


# --- this user's servers --------------------------------------------------------------------

@dataclass(frozen=True)
class ServerInfo:
    """One running server started by this user."""

    pid: int
    runtime: str  # "local", "bwrap" or "apptainer"
    socket: str | None  # the control socket's host path
    started: float  # seconds since the epoch
    socket_alive: bool  # something accepts connections on the socket
    orphaned: bool  # its lifeline (stdin pipe) has no writer left: the host is gone
    argv: tuple[str, ...] = ()

    @property
    def socket_id(self) -> str | None:
        """The id to attach to this server with (`socket_id=`), if it has one."""
        name = Path(self.socket).parent.name if self.socket else ""
        return name if is_socket_id(name) else None


@dataclass
class CleanupReport:
    """What cleanup_stale() did; `problems` lists what it could not undo."""

    stopped: list[int] = field(default_factory=list)
    removed_sockets: list[str] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)
    removed_workdirs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI."""
        out = [f"stopped orphaned server {pid}" for pid in self.stopped]
        out += [f"removed dead socket {path}" for path in self.removed_sockets]
        out += [f"unmounted stale mount {path}" for path in self.unmounted]
        out += [f"removed unfinished extraction {path}" for path in self.removed_dirs]
        out += [f"removed the work directory of a gone server {path}"
                for path in self.removed_workdirs]
        out += [f"could not clean up: {problem}" for problem in self.problems]
        return out or ["nothing to clean up"]


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    pgrp: int
    start_ticks: int
    argv: tuple[str, ...]


def _read_proc(pid: int) -> _Proc | None:
    fields = stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return _Proc(pid, int(fields[1]), int(fields[2]), int(fields[19]), argv_of(pid))


def _our_processes() -> dict[int, _Proc]:
    uid = os.getuid()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        proc = _read_proc(int(entry.name))
        if proc is not None:
            found[proc.pid] = proc
    return found


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _option(argv: tuple[str, ...], name: str) -> str | None:
    for index, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[index + 1]
    return None


def _classify(argv: tuple[str, ...]) -> tuple[str, str | None] | None:
    """(runtime, host socket path) if argv starts one of our servers, else None."""

    if not argv or "--socket" not in argv:
        return None
    program = os.path.basename(argv[0])
    socket_arg = _option(argv, "--socket")
    if program == "bwrap" and LAUNCHER_NAME in argv:
        if not socket_arg:
            return "bwrap", None
        inside = os.path.dirname(socket_arg)  # the host's socket dir is bound here
        host_dir = next((argv[i + 1] for i in range(len(argv) - 2)
                         if argv[i] == "--bind" and argv[i + 2] == inside), None)
        return "bwrap", str(Path(host_dir) / Path(socket_arg).name) if host_dir else None
    if program in ("apptainer", "singularity") and "run" in argv:
        if not socket_arg:
            return "apptainer", None
        inside = os.path.dirname(socket_arg)  # bound as HOST (same path) or HOST:INSIDE
        for index, arg in enumerate(argv[:-1]):
            bind = argv[index + 1]
            if arg == "--bind" and (bind == inside or bind.endswith(f":{inside}")):
                host_dir = bind if bind == inside else bind[:-len(inside) - 1]
                return "apptainer", str(Path(host_dir) / Path(socket_arg).name)
        return "apptainer", socket_arg
    if SERVER_MODULE in argv:
        return "local", socket_arg
    return None


def _socket_accepts(path: str | None) -> bool:
    return bool(path) and socket_answers(path, timeout=0.5)


def _pipe_of(pid: int, fd: int) -> str | None:
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    return target if target.startswith("pipe:") else None


def _holds_for_writing(pid: int, pipe: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != pipe:
                continue
            flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
        except (OSError, IndexError):
            continue
        if int(flags, 8) & os.O_ACCMODE == os.O_WRONLY:
            return True
    return False


def holds_lifeline(holder: int, server: int) -> bool:
    """True if process `holder` holds the write end of the pipe that is `server`'s stdin (the
    lifeline of a server started or forked for it)."""
    lifeline = _pipe_of(server, 0)
    return lifeline is not None and _holds_for_writing(holder, lifeline)


def _orphaned(pid: int, processes: dict[int, _Proc]) -> bool:
    """True if the server's stdin is a pipe whose write end nobody outside its tree holds."""
    lifeline = _pipe_of(pid, 0)
    if lifeline is None:
        return False  # started by hand (a terminal, a file): not ours to judge
    family = {pid, *descendants(pid)}
    return not any(_holds_for_writing(other, lifeline) for other in processes
                   if other not in family)


def list_servers() -> list[ServerInfo]:
    """Servers started by this user, one entry per server (its outermost process)."""
    processes = _our_processes()
    matches = {pid: kind for pid, proc in processes.items()
               if (kind := _classify(proc.argv)) is not None}
    boot, ticks = _boot_time(), os.sysconf("SC_CLK_TCK")
    servers = []
    for pid, (runtime, socket_path) in sorted(matches.items()):
        parent = processes[pid].ppid
        if any(ancestor in matches for ancestor in _ancestors(parent, processes)):
            continue  # a process inside a server we already list (bwrap's child, the python)
        servers.append(ServerInfo(
            pid=pid,
            runtime=runtime,
            socket=socket_path,
            started=boot + processes[pid].start_ticks / ticks,
            socket_alive=_socket_accepts(socket_path),
            orphaned=_orphaned(pid, processes),
            argv=processes[pid].argv,
        ))
    return servers


def _ancestors(pid: int, processes: dict[int, _Proc]) -> list[int]:
    chain = []
    while pid in processes and pid not in chain:
        chain.append(pid)
        pid = processes[pid].ppid
    return chain


# --- cleanup --------------------------------------------------------------------------------

def _stop(server: ServerInfo, grace: float = 3.0) -> bool:
    """SIGTERM the server (and the process group it leads, as ServerProcess starts it), then
    SIGKILL; True once it is gone."""
    record = ProcessRecord.of(server.pid)
    return record is None or stop_records([record], grace=grace)


def _in_socket_dir(socket_path: str | None, directory: Path) -> bool:
    """True for DIR/<id>/ctl.sock (and DIR/x.sock, the flat layout of older versions)."""
    if socket_path is None:
        return False
    parent = Path(socket_path).parent
    return parent == directory or (is_socket_id(parent.name) and parent.parent == directory)


def _remove_dead_sockets(live: set[str], report: CleanupReport) -> None:
    """Dead sockets in the per-server directories (and loose ones of the old flat layout);
    server directories left empty are removed too."""
    for entry in os.scandir(socket_dir()):
        if entry.is_dir(follow_symlinks=False) and is_socket_id(entry.name):
            removed = _remove_dead_sockets_in(entry.path, live, report)
            _remove_empty_server_dir(entry.path, just_emptied=removed)
        else:
            _remove_if_dead(entry, live, report)


def _remove_dead_sockets_in(directory: str, live: set[str], report: CleanupReport) -> bool:
    removed = False
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            removed |= _remove_if_dead(entry, live, report)
    return removed


def _remove_if_dead(entry: os.DirEntry, live: set[str], report: CleanupReport) -> bool:
    path = entry.path
    control = path[: -len(DATA_SUFFIX)] if path.endswith(DATA_SUFFIX) else path
    if control in live:
        return False
    try:
        if not stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
            return False  # someone is listening: not dead
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    report.removed_sockets.append(path)
    return True


def _remove_empty_server_dir(directory: str, just_emptied: bool) -> None:
    """rmdir an empty server directory whose server is gone (emptied now, or long ago)."""
    with contextlib.suppress(OSError):
        if just_emptied or time.time() - os.stat(directory).st_mtime >= EMPTY_DIR_GRACE:
            os.rmdir(directory)  # fails if anything is left in it: then it is not ours to judge


def _remove_stale_mounts(report: CleanupReport) -> None:

    base = mount_base_dir(create=False)
    if not base.is_dir():
        return
    mounted = {point for _device, point, _fstype in mountinfo_entries()}
    for entry in os.scandir(base):
        owner = entry.name.split("-", 1)[0]
        if owner.isdigit() and is_running(int(owner)):
            continue  # its starter is still running: maybe in the middle of a start
        if entry.path in mounted:
            problem = lazy_unmount(Path(entry.path))
            if problem:
                report.problems.append(f"unmounting {entry.path}: {problem}")
            else:
                report.unmounted.append(entry.path)
        else:
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


def _remove_unfinished_extractions(cache: Path, report: CleanupReport) -> None:

    if not cache.is_dir():
        return
    for work in cache.glob(f"{TMP_PREFIX}*"):
        digest = work.name[len(TMP_PREFIX):].split("-", 1)[0]
        lock = cache / f"{digest}.lock"
        if not work.is_dir() or not lock.exists():
            continue
        with locked(lock, blocking=False) as free:
            if not free:
                continue  # an extraction is running right now
            try:
                force_rmtree(work)
                report.removed_dirs.append(str(work))
            except OSError as exc:
                report.problems.append(f"removing {work}: {exc}")


def _remove_stale_workdirs(live_ids: set[str | None], report: CleanupReport) -> None:
    """Remove the apptainer runtime's per-server work directories whose server is gone (its
    host was killed before it could remove them); young ones may belong to a server starting."""
    try:
        entries = list(os.scandir(default_work_root()))
    except OSError:
        return
    for entry in entries:
        if entry.name in live_ids or not is_socket_id(entry.name):
            continue
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < EMPTY_DIR_GRACE:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        report.removed_workdirs.append(entry.path)


def cleanup_stale(rootfs_cache: Path | None = None) -> CleanupReport:
    """Stop orphaned servers; remove dead sockets, stale squashfuse mounts, broken extractions.

    Only servers with a socket in this user's socket directory are stopped.
    """
    report = CleanupReport()
    live: set[str] = set()
    directory = socket_dir()
    servers = list_servers()
    for server in servers:
        # Servers of another socket directory (DACBENCH_REMOTE_SOCKET_DIR) are another setup's.
        ours = _in_socket_dir(server.socket, directory)
        if server.orphaned and ours:
            if _stop(server):
                report.stopped.append(server.pid)
                if server.socket:
                    remove_socket_files(Path(server.socket))
            else:
                report.problems.append(f"server {server.pid} did not stop after SIGKILL")
        elif server.socket:
            live.add(server.socket)
    _remove_dead_sockets(live, report)
    _remove_stale_workdirs({server.socket_id for server in servers if server.pid not in
                            report.stopped}, report)
    _remove_stale_mounts(report)
    if rootfs_cache is None:
        rootfs_cache = default_rootfs_cache()
    _remove_unfinished_extractions(rootfs_cache, report)
    return report
