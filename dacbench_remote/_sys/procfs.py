"""Processes on this machine, read from /proc: identify one beyond its pid, find its descendants,
and stop them for sure (SIGTERM, then SIGKILL).

A process is recorded with its start time (from /proc) and the machine's boot id, so a later stop
(`sweep cancel`) never signals an unrelated process that happens to have reused its pid.
Standard library only: the zygote uses it inside minimal images.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may contain spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    fields = stat_fields(pid)
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

    CPython reseeds `random` after os.fork() itself (tests/test_processes.py checks), but
    numpy's legacy global RNG (`numpy.random.random()` and friends) is copied from the parent:
    without this, every trial forked from one parent draws the same "random" numbers. numpy is
    reseeded only when it is imported already (a later import seeds itself from entropy anyway).
    A benchmark's or trial's seed is applied after this (server.envs.seed_global_rngs), so
    seeded runs still repeat.
    """
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when the thread that started it exits."""
    if _PRCTL is not None:  # not Linux: the parent's cleanup is all we have
        _PRCTL(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _load_prctl():
    """libc's prctl, or None. Looked up once, at import: zygotes and worker hosts call
    die_with_parent in every child they fork, where loading libc anew cost each child
    copy-on-write faults worth a few tenths of a millisecond."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
