"""Processes on this machine, read from /proc: identify one beyond its pid, find its descendants,
and stop them for sure (SIGTERM, then SIGKILL); on that, this user's servers (`dacbench-remote
ps`) and the cleanup of what crashed hosts left (`dacbench-remote cleanup`).

A process is recorded with its start time (from /proc) and the machine's boot id, so a later stop
(`sweep cancel`) never signals an unrelated process that happens to have reused its pid.
A server is found by its command line in /proc: `python -m dacbench_remote.server --socket ...`
(local), our bubblewrap launcher (bwrap) or `apptainer|singularity run ... --socket ...`.
A server is an orphan when nobody holds the write end of its stdin "lifeline" any more.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import random
import shutil
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Standard library and these only: the zygote imports this module inside minimal images, so the
# runtimes (for `ps` and `cleanup`) are imported where they are used.
from .files import locked
from .sockets import DATA_SUFFIX, is_socket_id, remove_socket_files, socket_answers, socket_dir

LAUNCHER_NAME = "dacbench-remote-launcher"  # argv[0] of our shell inside bwrap containers
# An empty server directory this recent may belong to a server that is still starting (the
# directory is made before the image is unpacked): cleanup leaves it alone.
EMPTY_DIR_GRACE = 600.0
_PR_SET_PDEATHSIG = 1


# --- one process ----------------------------------------------------------------------------

def boot_id() -> str:
    """This boot of this machine (pids and start times mean something only within one)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def hostname() -> str:
    return socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may contain spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    if fields[0] == "Z":  # a zombie has exited; nothing left to stop
        return None
    return int(fields[19])


def is_running(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie has)."""
    return start_time(pid) is not None


def argv_of(pid: int) -> tuple[str, ...]:
    """The process's command line from /proc (empty when it is gone or unreadable)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ()
    return tuple(a.decode(errors="replace") for a in argv if a)


@dataclass(frozen=True)
class ProcessRecord:
    """A process identified beyond its pid: (pid, start time) on one boot of one host."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessRecord | None:
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    def to_dict(self) -> dict:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_dict(cls, data: dict) -> ProcessRecord:
        return cls(int(data["pid"]), int(data["start"]))


# --- process trees --------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """The children of `pid`: from each thread's /proc children list (no scan of /proc)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:  # the thread ended (or a kernel without CONFIG_PROC_CHILDREN)
            continue
        children += [int(word) for word in text.split()]
    return children


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (children, their children, ...), parents first."""
    found, queue = [], [pid]
    while queue:
        for child in children_of(queue.pop(0)):
            found.append(child)
            queue.append(child)
    return found


def tree(pid: int) -> list[ProcessRecord]:
    """Records of `pid` and all its living descendants."""
    records = [ProcessRecord.of(p) for p in [pid, *descendants(pid)]]
    return [r for r in records if r is not None]


# --- stopping -------------------------------------------------------------------------------

def signal_records(records: list[ProcessRecord], sig: int) -> int:
    """Send `sig` to each still-living recorded process (and the group it leads); count them."""
    sent = 0
    for record in records:
        if not record.alive():
            continue
        try:
            os.kill(record.pid, sig)
            sent += 1
            # Servers start their own session; their group also holds helpers (bwrap, children).
            if os.getpgid(record.pid) == record.pid:
                os.killpg(record.pid, sig)
        except (ProcessLookupError, PermissionError):
            continue
    return sent


def stop_records(records: list[ProcessRecord], grace: float = 5.0) -> bool:
    """SIGTERM the processes, wait up to `grace` seconds, then SIGKILL whatever is left.

    True when none of them is alive afterwards.
    """
    return terminate_then_kill(lambda sig: signal_records(records, sig),
                               lambda: not any(r.alive() for r in records), grace)


def terminate_then_kill(send: Callable[[int], int], gone: Callable[[], bool], grace: float,
                        kill_wait: float = 5.0) -> bool:
    """`send(SIGTERM)`, wait up to `grace` seconds for `gone()`, then `send(SIGKILL)` and wait
    up to `kill_wait` more. `send` returns how many processes it signalled (0: nothing to wait
    for). True when `gone()` afterwards."""
    if send(signal.SIGTERM) and not wait_until(gone, grace):
        send(signal.SIGKILL)
        wait_until(gone, kill_wait)
    return gone()


def wait_gone(records: list[ProcessRecord], timeout: float) -> bool:
    """True once none of the processes is alive (zombies count as gone)."""
    return wait_until(lambda: not any(r.alive() for r in records), timeout)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` (briefly at first) until it holds, or False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.002  # most processes are gone within milliseconds of a SIGTERM
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(0.05, pause * 2)


def fresh_global_rngs() -> None:
    """In a forked child: fresh OS entropy for the process-global RNGs, as a new process has.

    CPython reseeds `random` after os.fork() itself, but numpy's legacy global RNG
    (`numpy.random.random()` and friends) is copied from the parent: without this, every trial
    forked from one parent draws the same "random" numbers. numpy is reseeded only when it is
    imported already (a later import seeds itself from entropy anyway). A benchmark's or trial's
    seed is applied after this (server_envs.seed_global_rngs), so seeded runs still repeat.
    """
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when the thread that started it exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's cleanup is all we have
        return


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
    fields = _stat_fields(pid)
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
    from .runtimes.base import SERVER_MODULE

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
    from .runtimes.rootfs import lazy_unmount, mount_base_dir, mountinfo_entries

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
    from .runtimes.rootfs import TMP_PREFIX, force_rmtree

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
    from .runtimes.apptainer import default_work_root

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
        from .runtimes.rootfs import default_rootfs_cache

        rootfs_cache = default_rootfs_cache()
    _remove_unfinished_extractions(rootfs_cache, report)
    return report
