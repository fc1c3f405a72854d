"""The bwrap runtime's command line and option checks (no container is started here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dacbench_remote.errors import BadConfig, ImageNotFound, RuntimeUnavailable
from dacbench_remote.runtimes import bwrap
from dacbench_remote.runtimes.base import CONTAINER_SOCKET_DIR, parse_bind
from dacbench_remote.runtimes.bwrap import BwrapRuntime, container_socket_dir
from tests.needs import need_tools


@pytest.fixture
def root(tmp_path) -> Path:
    """A fake extracted root with the directories a Debian image has."""
    root = tmp_path / "rootfs"
    for directory in ("bin", "etc", "mnt", "tmp", "run", ".singularity.d"):
        (root / directory).mkdir(parents=True)
    (root / "etc" / "resolv.conf").write_text("")
    return root


def argv_for(root: Path, socket: str = "/tmp/dacbench-remote-1000/srv-0000000a/ctl.sock", **options):
    runtime = BwrapRuntime("/images/base.sif", bwrap="bwrap", **options)
    return runtime.bwrap_argv(root, Path(socket))


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == flag]


def test_default_command_is_isolated_and_read_only(root):
    argv = argv_for(root)
    assert argv[:2] == ["bwrap", "--unshare-all"]
    assert "--share-net" not in argv
    # Not --die-with-parent: its SIGKILL would beat the server's own cleanup; the launcher's
    # lifeline watchdog kills a server that ignores a closed lifeline instead.
    assert "--die-with-parent" not in argv
    launcher = argv[argv.index("-c") + 1]
    assert "  cat >/dev/null" in launcher and '  kill -KILL "$server" 2>/dev/null' in launcher
    assert pairs(argv, "--ro-bind") == [(str(root), "/")]
    # Only this server's own directory, never the user's socket root with the others in it.
    assert pairs(argv, "--bind") == [("/tmp/dacbench-remote-1000/srv-0000000a",
                                      "/tmp/dacbench-remote-1000/srv-0000000a")]
    assert argv[argv.index("--proc") + 1] == "/proc"
    assert argv[argv.index("--dev") + 1] == "/dev"
    assert argv[argv.index("--tmpfs") + 1] == "/tmp"
    assert "--clearenv" in argv
    # The image's runscript is started by our launcher with the socket path inside.
    tail = argv[argv.index("/bin/sh"):]
    assert tail[1] == "-c" and tail[3] == "dacbench-remote-launcher"
    assert tail[4:] == ["--socket", "/tmp/dacbench-remote-1000/srv-0000000a/ctl.sock",
                        "--exit-on-stdin-close"]
    assert argv == argv_for(root)  # deterministic


def test_environment_is_clean_and_says_which_image(root):
    env = dict(pairs(argv_for(root), "--setenv"))
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["APPTAINER_CONTAINER"] == "/images/base.sif"
    assert env["SINGULARITY_NAME"] == "base.sif"
    assert "HOSTNAME" not in env and "PYTHONPATH" not in env


def test_launcher_sources_image_env_then_user_env_then_runscript(root):
    script = argv_for(root, env={"B": "2", "A": "1"})
    script = script[script.index("-c") + 1]
    lines = script.splitlines()
    assert lines[0] == "for script in /.singularity.d/env/*.sh; do"
    assert lines[3:5] == ["export A=1", "export B=2"]
    assert '/.singularity.d/runscript "$@" <&3 3<&- &' in lines
    assert lines[-1] == 'exit "$status"'


def test_launcher_runs_on_a_real_shell_with_exact_values(root, tmp_path):
    """Run the launcher with /.singularity.d pointed at a fake one: env order, quoting, args."""
    fake = tmp_path / "singularity.d"
    (fake / "env").mkdir(parents=True)
    (fake / "env" / "90-environment.sh").write_text(
        "export OVERRIDDEN=from-image\nexport IMAGE_ONLY=yes\n")
    (fake / "runscript").write_text("#!/bin/sh\nenv -0\nprintf 'ARG=%s\\0' \"$@\"\n")
    (fake / "runscript").chmod(0o755)
    tricky = {"QUOTES": "it's \"quoted\"", "DOLLAR": "$HOME and `date`", "SPACES": " a  b ",
              "NEWLINE": "one\ntwo", "EMPTY": "", "OVERRIDDEN": "from-user"}
    argv = argv_for(root, env=tricky)
    tail = argv[argv.index("/bin/sh"):]
    tail[2] = tail[2].replace("/.singularity.d", str(fake))
    # stdin (the lifeline) closed at once: the launcher must still finish, leaving nothing.
    shown = subprocess.run(tail, capture_output=True, check=True, stdin=subprocess.DEVNULL,
                           env={"PATH": os.environ["PATH"]}, timeout=30).stdout.decode().split("\0")
    values = dict(item.split("=", 1) for item in shown if "=" in item and not
                  item.startswith("ARG="))
    assert {name: values[name] for name in tricky} == tricky
    assert values["IMAGE_ONLY"] == "yes"
    assert [item[4:] for item in shown if item.startswith("ARG=")] == [
        "--socket", "/tmp/dacbench-remote-1000/srv-0000000a/ctl.sock", "--exit-on-stdin-close"]


def test_network_shares_the_host_network_and_name_resolution(root):
    argv = argv_for(root, network=True)
    assert argv[1:3] == ["--unshare-all", "--share-net"]
    # resolv.conf exists in the image, hosts does not: only resolv.conf can be bound over.
    assert pairs(argv, "--ro-bind-try") == [("/etc/resolv.conf", "/etc/resolv.conf")]


def test_user_binds_read_only_and_read_write(root):
    argv = argv_for(root, binds=["/data:/mnt:ro", "/results", ("/scratch", "/tmp/scratch")])
    assert ("/data", "/mnt") in pairs(argv, "--ro-bind")
    assert ("/results", "/results") in pairs(argv, "--bind")
    assert ("/scratch", "/tmp/scratch") in pairs(argv, "--bind")


def test_socket_dir_lands_at_its_own_path_where_it_can(root):
    assert container_socket_dir(root, Path("/tmp/dacbench-remote-7/srv-00000001")) == \
        "/tmp/dacbench-remote-7/srv-00000001"
    assert container_socket_dir(root, Path("/run/user/7/dacbench-remote/srv-00000001")) == \
        "/run/user/7/dacbench-remote/srv-00000001"
    assert container_socket_dir(root, Path("/mnt")) == "/mnt"  # exists in the image
    assert container_socket_dir(root, Path("/home/u/sockets/srv-00000001")) == \
        f"{CONTAINER_SOCKET_DIR}/srv-00000001"


def test_socket_dir_under_run_gets_a_tmpfs_run(root):
    argv = argv_for(root, socket="/run/user/1000/dacbench-remote/srv-00000002/ctl.sock")
    tmpfs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--tmpfs"]
    assert tmpfs == ["/tmp", "/run"]
    assert pairs(argv, "--bind") == [("/run/user/1000/dacbench-remote/srv-00000002",
                                      "/run/user/1000/dacbench-remote/srv-00000002")]


def test_socket_dir_elsewhere_is_bound_under_tmp_keeping_the_server_id(root):
    argv = argv_for(root, socket="/home/u/sockets/srv-00000003/ctl.sock")
    assert pairs(argv, "--bind") == [("/home/u/sockets/srv-00000003",
                                      f"{CONTAINER_SOCKET_DIR}/srv-00000003")]
    assert argv[-2] == f"{CONTAINER_SOCKET_DIR}/srv-00000003/ctl.sock"


def test_a_socket_directory_shared_with_other_servers_is_refused(tmp_path):
    (tmp_path / "srv-1.sock").touch()  # another server's socket (the old flat layout)
    with pytest.raises(BadConfig, match=r"holds srv-1\.sock: a container gets this whole "
                                        r"directory, so each server needs its own"):
        BwrapRuntime(tmp_path / "x.sif").start(tmp_path / "srv-2.sock")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("relative:/mnt", "must be absolute paths"),
        ("/a:/b:rx", "the option must be 'ro' or 'rw', not 'rx'"),
        ("/a:/b:ro:extra", r"is not SRC\[:DST\[:ro\|rw\]\]"),
        ("", r"is not SRC\[:DST\[:ro\|rw\]\]"),
        ("/a:", r"is not SRC\[:DST\[:ro\|rw\]\]"),
    ],
)
def test_bad_bind_specs_are_refused(spec, message):
    with pytest.raises(BadConfig, match=message):
        parse_bind(spec)


def test_parse_bind_defaults_destination_to_source():
    assert parse_bind("/data/") == ("/data", "/data", False)
    assert parse_bind("/data:/mnt/data:ro") == ("/data", "/mnt/data", True)


def test_bad_env_name_is_refused():
    with pytest.raises(BadConfig, match="'NOT-VALID' is not a valid shell name"):
        BwrapRuntime("/x.sif", env={"NOT-VALID": "1"})


def test_bind_destination_missing_in_image_is_refused(root, tmp_path):
    runtime = BwrapRuntime("/x.sif", binds=[f"{tmp_path}:/data"])
    with pytest.raises(BadConfig, match=r"bind destination /data does not exist in image x\.sif"):
        runtime.check_binds(root)


def test_bind_source_missing_on_host_is_refused(root, tmp_path):
    runtime = BwrapRuntime("/x.sif", binds=[f"{tmp_path}/absent:/mnt"])
    with pytest.raises(BadConfig, match=r"bind source .*absent does not exist on this machine"):
        runtime.check_binds(root)


def test_bind_destinations_in_image_or_tmp_are_accepted(root, tmp_path):
    BwrapRuntime("/x.sif", binds=[f"{tmp_path}:/mnt", f"{tmp_path}:/tmp/new"]).check_binds(root)


def test_missing_bwrap_binary_says_what_to_install(tmp_path):
    runtime = BwrapRuntime(tmp_path / "x.sif", bwrap="bwrap-that-does-not-exist")
    with pytest.raises(RuntimeUnavailable, match=r"bwrap-that-does-not-exist \(bubblewrap\) is not "
                                        r"installed; install it, e\.g\. `apt-get install "
                                        r"bubblewrap`"):
        runtime.prepare()


def test_missing_image_is_named(tmp_path):
    need_tools("bwrap")
    runtime = BwrapRuntime(tmp_path / "absent.sif")
    with pytest.raises(ImageNotFound, match=r"absent\.sif does not exist or is not a file"):
        runtime.prepare()


def test_the_launcher_exits_with_the_status_of_a_runscript_that_fails_at_once(tmp_path):
    """The launcher's status once its runscript is gone, run by the host's /bin/sh (dash).

    A runscript that exits before the launcher first looks at it used to leave the launcher at
    status 0 in about half the runs (a server failing at start looked like a clean exit).
    """
    runscript = tmp_path / "runscript"
    runscript.write_text("#!/bin/sh\nexit 3\n")
    runscript.chmod(0o755)
    script = bwrap._launcher_script({}).replace(bwrap.RUNSCRIPT, str(runscript))
    statuses = [subprocess.run(["/bin/sh", "-c", script, "launcher"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30).returncode for _ in range(40)]
    assert statuses == [3] * 40
