"""The bwrap runtime for real, as an unprivileged user: isolation, caching, and what is left.

The user side runs tests/integration/bwrap_user_driver.py with the user's own Python (the
`user_python` fixture); it reports as JSON what it saw. Root-only checks (squashfuse, which needs
/dev/fuse) run in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dacbench_remote._sys.sockets import new_socket_path
from dacbench_remote.errors import BadConfig, CorruptImage, UnrunnableImage
from dacbench_remote.runtimes.bwrap import BwrapRuntime
from dacbench_remote.runtimes.rootfs import force_rmtree
from tests.needs import need_fuse, need_tools

from .runtime_images import (
    SHARED_DIR,
    accepts,
    build_tiny_image,
    fuse_mounts,
    processes_of,
    runtime_mounts,
    squashfuse_daemons,
    talk,
    tree_of,
    wait_until,
)

pytestmark = pytest.mark.integration


DRIVER_SOURCE = Path(__file__).with_name("bwrap_user_driver.py")
STANDIN = {"DACBR_STANDIN": "1"}


class User:
    """The unprivileged user, its Python, and a private scratch directory for one test.

    The user is shared with other tests that may run at the same time: everything this test
    starts carries a marker in its environment (inside the container too), only marked processes
    count as ours, and the sockets live in a socket directory of this test's own.
    """

    def __init__(self, name: str, python: str, image: Path, scratch: Path, warm_cache: Path):
        self.name, self.python, self.image, self.scratch = name, python, image, scratch
        self.warm_cache = warm_cache  # shared by the tests that do not measure extraction
        self.cold_cache = scratch / "cache"
        token = uuid.uuid4().hex[:12]
        self.marker = f"DACBR_TEST_TOKEN={token}"
        # Short: AF_UNIX paths are limited to 107 bytes.
        self.socket_dir = Path(f"/tmp/dacbr-{token}")
        self.uid = pwd.getpwnam(name).pw_uid
        self.driver = SHARED_DIR / "bwrap_user_driver.py"

    def argv(self, mode: str, **args) -> list[str]:
        args.setdefault("image", str(self.image))
        args.setdefault("cache", str(self.warm_cache))
        name, value = self.marker.split("=")
        args["env"] = {**args.get("env", {}), name: value}
        return ["runuser", "-u", self.name, "--", "env", self.marker, "DACBR_HOST_ONLY=leak",
                "OPENBLAS_CORETYPE=Haswell",  # a numeric library's: passed in
                f"DACBENCH_REMOTE_SOCKET_DIR={self.socket_dir}", self.python, str(self.driver),
                mode, json.dumps(args)]

    def run(self, mode: str, **args) -> list[dict]:
        result = subprocess.run(self.argv(mode, **args), capture_output=True, text=True,
                                cwd="/", timeout=300)
        assert result.returncode == 0, f"driver failed:\n{result.stdout}\n{result.stderr}"
        return [json.loads(line) for line in result.stdout.splitlines()]

    def start(self, mode: str, **args) -> subprocess.Popen:
        return subprocess.Popen(self.argv(mode, **args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd="/")

    def leftovers(self) -> dict[int, str]:
        """Processes this test started that are still running (marked ones of the user)."""
        return processes_of(self.uid, self.marker)


def _user_dir(name: str, user: str) -> Path:
    path = SHARED_DIR / "scratch" / f"{name[:40]}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    os.chmod(SHARED_DIR / "scratch", 0o755)
    shutil.chown(path, user)
    return path


@pytest.fixture(scope="module")
def warm_cache(unprivileged_user):
    path = _user_dir("warm-cache", unprivileged_user)
    yield path
    force_rmtree(path)


@pytest.fixture
def user(unprivileged_user, user_python, standin_image, warm_cache, request):
    scratch = _user_dir(request.node.name, unprivileged_user)
    driver = SHARED_DIR / "bwrap_user_driver.py"
    shutil.copy(DRIVER_SOURCE, driver)
    os.chmod(driver, 0o644)
    person = User(unprivileged_user, user_python, standin_image, scratch, warm_cache)
    yield person
    for pid in person.leftovers():  # never let one test's failure leak into the next
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    force_rmtree(scratch)
    shutil.rmtree(person.socket_dir, ignore_errors=True)


def test_runs_rootless_isolated_with_socket_in_private_dir(user):
    queries = ["PING", "IDS", "ENV DACBR_IMAGE_VAR", "ENV DACBR_OVERRIDE", "ENV DACBR_HOST_ONLY",
               "ENV OPENBLAS_CORETYPE",
               "NET", "WRITE /etc/written", "READ /opt/dacbr-standin/server.py",
               f"READ {user.driver}"]
    env = {**STANDIN, "DACBR_OVERRIDE": "from-user"}
    report, after = user.run("serve", env=env, queries=queries)
    answers = report["answers"]
    assert answers["PING"] == "PONG"
    assert answers["IDS"].split()[0] == str(user.uid)  # same uid inside, no root
    assert answers["ENV DACBR_IMAGE_VAR"] == "from-image"  # the image's %environment
    assert answers["ENV DACBR_OVERRIDE"] == "from-user"  # the user's env wins
    assert answers["ENV DACBR_HOST_ONLY"] == "<unset>"  # the host's env stays out
    # ... except what numeric libraries read, as an in-process run would (runtimes.md)
    assert answers["ENV OPENBLAS_CORETYPE"] == "Haswell"
    assert answers["NET"] == "lo"  # no network
    assert answers["WRITE /etc/written"] == "<error: Read-only file system>"
    assert "Stand-in server" in answers["READ /opt/dacbr-standin/server.py"]
    assert answers[f"READ {user.driver}"] == "<error: No such file or directory>"
    # The user's socket root holds one private directory per server; only that one is inside.
    assert report["socket_uid"] == report["socket_dir_uid"] == report["socket_root_uid"] == \
        user.uid
    assert report["socket_dir_mode"] == report["socket_root_mode"] == "0o700"
    assert Path(report["socket"]).parent.parent == user.socket_dir
    assert report["describe"]["rootfs_mode"] == "extracted"
    assert after == {"after_stop_alive": False, "socket_exists": False,
                     "data_socket_exists": False, "socket_dir_exists": False}
    assert wait_until(lambda: not user.leftovers(), 10), user.leftovers()


def test_extraction_is_reused_by_the_next_start(user):
    cache = str(user.cold_cache)
    first = user.run("serve", env=STANDIN, queries=["PING"], cache=cache)[0]["describe"]
    second = user.run("serve", env=STANDIN, queries=["PING"], cache=cache)[0]["describe"]
    assert first["extracted_now"] is True
    assert second["extracted_now"] is False
    assert first["rootfs"] == second["rootfs"]
    assert Path(first["rootfs"]).name == first["image_sha256"]
    assert Path(first["rootfs"]).stat().st_uid == user.uid


def test_concurrent_cold_starts_extract_once(user):
    drivers = [user.start("serve", env=STANDIN, queries=["PING"], cache=str(user.cold_cache))
               for _ in range(3)]
    reports = []
    for driver in drivers:
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        reports.append(json.loads(out.splitlines()[0]))
    assert [r["answers"]["PING"] for r in reports] == ["PONG"] * 3
    assert sorted(r["describe"]["extracted_now"] for r in reports) == [False, False, True]
    assert sorted(p.name for p in user.cold_cache.iterdir() if not p.name.startswith(".")) == [
        reports[0]["describe"]["image_sha256"], reports[0]["describe"]["image_sha256"] + ".lock"]


def test_kill_9_of_the_host_leaves_no_process_or_mount(user):
    driver = user.start("serve", env=STANDIN, queries=["PING", "SPAWN"], hold=True)
    report = json.loads(driver.stdout.readline())
    assert report["answers"]["PING"] == "PONG"
    assert int(report["answers"]["SPAWN"]) > 0  # the server even has a child of its own
    assert len(user.leftovers()) >= 4  # driver, bwrap (x2), server, its child
    os.kill(report["driver_pid"], signal.SIGKILL)
    driver.communicate(timeout=30)
    assert wait_until(lambda: not user.leftovers(), 15), f"left running: {user.leftovers()}"
    assert not [m for m in fuse_mounts() if f"user_id={user.uid}," in m]
    # The server saw its lifeline close and removed its own sockets before it exited.
    assert not os.path.lexists(report["socket"])
    assert not os.path.lexists(report["socket"] + ".data")


def test_failing_runscript_output_reaches_the_host(user):
    env = {"DACBR_STANDIN_FAIL": "no benchmark called nonsense"}
    report = user.run("fail", env=env)[0]
    assert report["returncode"] == 3
    assert "stand-in runscript failing on purpose: no benchmark called nonsense" in \
        report["tail"]
    assert wait_until(lambda: not user.leftovers(), 10)


def test_ps_lists_a_running_server_with_its_host_socket(user):
    driver = user.start("serve", env=STANDIN, queries=["PING"], hold=True)
    try:
        report = json.loads(driver.stdout.readline())
        servers = [s for s in user.run("ps")[0]["servers"]
                   if s["socket"] and Path(s["socket"]).parent.parent == user.socket_dir]
        assert [(s["pid"], s["runtime"], s["socket"], s["socket_alive"], s["orphaned"])
                for s in servers] == [(report["server_pid"], "bwrap", report["socket"], True,
                                       False)]
    finally:
        os.kill(report["driver_pid"], signal.SIGKILL)
        driver.communicate(timeout=30)
    assert wait_until(lambda: not user.leftovers(), 15)


# --- root-side checks (this process) ----------------------------------------------------------

@pytest.fixture
def root_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bwrap-cache")


def _start_standin(runtime: BwrapRuntime):
    socket_path = new_socket_path("bwraptest")
    server = runtime.start(socket_path)
    if not wait_until(lambda: not server.alive() or accepts(socket_path), 60):
        server.stop()
        pytest.fail("stand-in did not come up")
    assert server.alive(), server.output_tail()
    return server


def test_user_binds_and_network(standin_image, root_cache, tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "note").write_text("from the host")
    runtime = BwrapRuntime(standin_image, use_fuse=False, extract_cache=root_cache,
                           env=STANDIN, network=True, binds=[f"{tmp_path}/shared:/mnt:ro"])
    server = _start_standin(runtime)
    try:
        assert talk(server.socket_path, "READ /mnt/note") == "from the host"
        assert talk(server.socket_path, "WRITE /mnt/new") == "<error: Read-only file system>"
        host_interfaces = ",".join(sorted(name for _, name in socket.if_nameindex()))
        assert talk(server.socket_path, "NET") == host_interfaces
    finally:
        server.stop()


def test_squashfuse_mount_is_detached_while_running_and_gone_after(standin_image):
    need_fuse()
    runtime = BwrapRuntime(standin_image, use_fuse=True, env=STANDIN)
    server = _start_standin(runtime)
    try:
        assert runtime.describe()["rootfs_mode"] == "squashfuse"
        assert talk(server.socket_path, "PING") == "PONG"
        # Detached from the host right after start: only the container holds it now.
        assert not runtime_mounts()
        daemons = squashfuse_daemons(standin_image)
        assert daemons
    finally:
        server.stop()
    assert wait_until(lambda: not daemons & squashfuse_daemons(), 10)


def test_squashfuse_kill_9_of_host_leaves_no_mount(standin_image, tmp_path):
    need_fuse()
    script = (
        "import sys, time; from pathlib import Path\n"
        "from dacbench_remote.runtimes.bwrap import BwrapRuntime\n"
        "from dacbench_remote._sys.sockets import new_socket_path\n"
        f"rt = BwrapRuntime({str(standin_image)!r}, use_fuse=True, env={STANDIN!r})\n"
        "s = rt.start(new_socket_path('kill9'))\n"
        "while not s.socket_path.exists(): time.sleep(0.01)\n"
        "print(s.pid, s.socket_path, flush=True); time.sleep(600)\n"
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[2]))
    server_pid, socket_path = host.stdout.readline().split()
    tree = tree_of(int(server_pid))
    daemons = squashfuse_daemons(standin_image)
    assert daemons
    host.kill()
    host.wait()
    mine = tree | daemons
    assert wait_until(lambda: not mine & set(processes_of(os.getuid())), 15)
    assert not runtime_mounts(host.pid)
    Path(socket_path).unlink(missing_ok=True)  # dead socket: cleanup's job, tested elsewhere


def test_image_without_runscript_is_refused(tmp_path):
    image = build_tiny_image(tmp_path, with_runscript=False)
    runtime = BwrapRuntime(image, use_fuse=False, extract_cache=tmp_path / "cache")
    with pytest.raises(UnrunnableImage, match=r"tiny\.sif has no /\.singularity\.d/runscript; build "
                                         r"it from a recipe whose %runscript starts"):
        runtime.start(new_socket_path("norun"))


def test_corrupt_image_is_refused_before_anything_starts(tmp_path):
    image = tmp_path / "broken.sif"
    image.write_bytes(b"\x00" * 4096)
    runtime = BwrapRuntime(image, use_fuse=False, extract_cache=tmp_path / "cache")
    with pytest.raises(CorruptImage, match=r"broken\.sif is not a SIF image: bad magic"):
        runtime.start(new_socket_path("corrupt"))
    assert not (tmp_path / "cache").exists()


def test_bind_to_a_path_missing_in_the_image_is_refused(standin_image, root_cache, tmp_path):
    runtime = BwrapRuntime(standin_image, use_fuse=False, extract_cache=root_cache,
                           binds=[f"{tmp_path}:/data"])
    with pytest.raises(BadConfig, match="bind destination /data does not exist in image"):
        runtime.start(new_socket_path("badbind"))


def test_launcher_kills_a_server_that_ignores_its_closed_lifeline(tmp_path, monkeypatch):
    """The watchdog: a server still running LIFELINE_GRACE s after its stdin closed is killed,
    and with it everything in the sandbox (here a server that never reads stdin)."""
    import time

    from dacbench_remote.runtimes import bwrap as bwrap_module

    need_tools("bwrap")
    monkeypatch.setattr(bwrap_module, "LIFELINE_GRACE", 1)
    fake = tmp_path / "singularity.d"
    (fake / "env").mkdir(parents=True)
    child, server = (f"{600 + uuid.uuid4().int % 100000}.{n}" for n in (1, 2))  # unique argv
    (fake / "runscript").write_text(f"#!/bin/sh\nsleep {child} &\nexec sleep {server}\n")
    (fake / "runscript").chmod(0o755)
    argv = BwrapRuntime("/images/x.sif").bwrap_argv(Path("/"), Path("/tmp/dr-x/srv-1.sock"))
    launcher = argv[argv.index("/bin/sh"):]
    launcher[2] = launcher[2].replace("/.singularity.d", str(fake))
    sandbox = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
               *launcher]
    process = subprocess.Popen(sandbox, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    assert process.poll() is None, "the sandbox ended before its lifeline closed"
    process.stdin.close()
    assert process.wait(timeout=20) == 128 + signal.SIGKILL  # the server's status: killed
    for duration in (child, server):
        found = subprocess.run(["pgrep", "-fx", f"sleep {duration}"], capture_output=True)
        assert found.returncode == 1, f"sleep {duration} is still running"
