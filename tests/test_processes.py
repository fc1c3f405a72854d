"""How `ps` recognises our servers from their command lines, the cleanup report's wording, and
the SIGTERM-then-SIGKILL stop."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from dacbench_remote._sys.procfs import fresh_global_rngs, terminate_then_kill
from dacbench_remote.host.servers import (
    EMPTY_DIR_GRACE,
    CleanupReport,
    ServerInfo,
    _classify,
    _in_socket_dir,
    _remove_stale_workdirs,
)
from dacbench_remote.runtimes.apptainer import WORKDIR_ENV, ApptainerRuntime, default_work_root
from dacbench_remote.runtimes.bwrap import BwrapRuntime


def test_bwrap_server_maps_its_socket_back_to_the_host(tmp_path):
    for host_socket in ("/tmp/dacbench-remote-1000/srv-00000001/ctl.sock",
                        "/home/u/s/srv-00000002/ctl.sock",
                        "/run/user/1000/dacbench-remote/srv-00000003/ctl.sock",
                        "/tmp/dacbench-remote-1000/srv-1.sock"):  # the older flat layout
        argv = BwrapRuntime("/i.sif").bwrap_argv(tmp_path, Path(host_socket))
        assert _classify(tuple(argv)) == ("bwrap", host_socket)


def test_apptainer_and_local_servers():
    argv = ApptainerRuntime("/i.sif").run_argv("/usr/bin/apptainer", Path("/tmp/d/s.sock"))
    assert _classify(tuple(argv)) == ("apptainer", "/tmp/d/s.sock")
    for host_socket in ("/run/user/1000/dacbench-remote/srv-00000003/ctl.sock",
                        "/home/u/s/srv-00000004/ctl.sock"):  # bound at /tmp/dacbench-remote/ID
        for containall in (True, False):
            runtime = ApptainerRuntime("/i.sif", binds=["/data:/tmp/dacbench-remote"],
                                       containall=containall, cleanenv=containall)
            argv = runtime.run_argv("apptainer", Path(host_socket), Path("/w/x"))
            assert _classify(tuple(argv)) == ("apptainer", host_socket)
    local = ("/usr/bin/python3", "-m", "dacbench_remote.server", "--socket", "/tmp/d/l.sock",
             "--exit-on-stdin-close")
    assert _classify(local) == ("local", "/tmp/d/l.sock")


def test_other_processes_are_not_servers():
    assert _classify(("python3", "-m", "http.server")) is None
    assert _classify(("bwrap", "--ro-bind", "/", "/", "bash")) is None
    assert _classify(("apptainer", "run", "x.sif")) is None  # no socket: not started by us
    assert _classify(()) is None


def test_cleanup_report_lines():
    report = CleanupReport(stopped=[12], removed_sockets=["/s/a.sock"], unmounted=["/m/1-x"],
                           removed_dirs=["/c/.tmp-ab-1"], problems=["server 3 did not stop"])
    assert report.lines() == [
        "stopped orphaned server 12", "removed dead socket /s/a.sock",
        "unmounted stale mount /m/1-x", "removed unfinished extraction /c/.tmp-ab-1",
        "could not clean up: server 3 did not stop",
    ]
    assert CleanupReport().lines() == ["nothing to clean up"]


def test_a_servers_id_is_its_directory_and_only_its_own_root_counts_as_ours():
    server = ServerInfo(pid=1, runtime="local", socket="/r/srv-0000abcd/ctl.sock", started=0.0,
                        socket_alive=True, orphaned=False)
    assert server.socket_id == "srv-0000abcd"
    assert replace(server, socket="/r/srv-1.sock").socket_id is None  # the older flat layout
    assert replace(server, socket=None).socket_id is None
    assert _in_socket_dir("/r/srv-0000abcd/ctl.sock", Path("/r"))
    assert _in_socket_dir("/r/srv-1.sock", Path("/r"))
    assert not _in_socket_dir("/other/srv-0000abcd/ctl.sock", Path("/r"))
    assert not _in_socket_dir("/r/notes/ctl.sock", Path("/r"))
    assert not _in_socket_dir(None, Path("/r"))


def test_terminate_then_kill_kills_only_what_ignores_sigterm():
    sent: list[int] = []
    alive = {"polite": True, "stubborn": True}

    def send(sig: int) -> int:
        sent.append(sig)
        alive["polite"] = False  # leaves on SIGTERM
        if sig == signal.SIGKILL:
            alive["stubborn"] = False
        return sum(alive.values()) or 1

    assert terminate_then_kill(send, lambda: not any(alive.values()), grace=0.05)
    assert sent == [signal.SIGTERM, signal.SIGKILL]
    sent.clear()
    assert terminate_then_kill(send, lambda: True, grace=5.0)  # gone at once: no SIGKILL
    assert sent == [signal.SIGTERM]


def test_nothing_signalled_means_nothing_to_wait_for():
    started = time.monotonic()
    assert not terminate_then_kill(lambda sig: 0, lambda: False, grace=5.0)
    assert time.monotonic() - started < 1.0


def test_the_zygote_and_processes_import_nothing_host_only():
    # The zygote imports processes inside minimal images (numpy, gymnasium and Pyro5 only).
    code = "import sys, dacbench_remote.server.zygote; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "dacbench_remote._sys.procfs" in loaded
    host_only = {"requests", "dacbench_remote.runtimes", "dacbench_remote.images",
                 "dacbench_remote.sweeps", "dacbench_remote.host"}
    assert [name for name in loaded if {name.split(".")[0], ".".join(name.split(".")[:2])}
            & host_only] == []


def test_work_directories_of_gone_servers_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKDIR_ENV, str(tmp_path))
    root = default_work_root()
    gone, young, live, other = (root / name for name in (
        "srv-0000000a", "srv-0000000b", "srv-0000000c", "not-a-server"))
    for directory in (gone, young, live, other):
        (directory / "tmp").mkdir(parents=True)
    old = time.time() - EMPTY_DIR_GRACE - 60
    for directory in (gone, live, other):
        os.utime(directory, (old, old))
    report = CleanupReport()
    _remove_stale_workdirs({"srv-0000000c"}, report)
    assert report.removed_workdirs == [str(gone)] and not gone.exists()
    assert young.is_dir() and live.is_dir() and other.is_dir()
def _draws_of_forked_children(reseed: bool, children: int = 3) -> list[tuple[float, float]]:
    """What `children` forked children draw first from numpy's legacy RNG and `random`."""
    draws = []
    for _ in range(children):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            if reseed:
                fresh_global_rngs()
            os.write(write_end, f"{np.random.random()!r} {random.random()!r}".encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            numpy_draw, random_draw = pipe.read().split()
        os.waitpid(pid, 0)
        draws.append((float(numpy_draw), float(random_draw)))
    return draws


def test_forked_children_share_numpys_global_rng_unless_reseeded():
    np.random.seed(7)  # a parent whose state its children inherit
    plain = _draws_of_forked_children(reseed=False)
    assert len({numpy_draw for numpy_draw, _ in plain}) == 1  # what os.fork() leaves
    assert len({random_draw for _, random_draw in plain}) == 3  # CPython reseeds `random`
    fresh = _draws_of_forked_children(reseed=True)
    assert len({numpy_draw for numpy_draw, _ in fresh}) == 3
    assert len({random_draw for _, random_draw in fresh}) == 3
