"""How `ps` recognises our servers from their command lines, and the cleanup report's wording."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dacbench_remote.processes import CleanupReport, ServerInfo, _classify, _in_socket_dir
from dacbench_remote.runtimes.apptainer import ApptainerRuntime
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
