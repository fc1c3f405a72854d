"""A small real .sif for runtime tests, built once and cached under /var/tmp, plus /proc helpers.

The image is Debian bookworm (mmdebstrap, essential + python3, the build host's apt sources)
with numpy/Pyro5/gymnasium and this repository's `dacbench_remote` package, so its runscript
starts the real server. With DACBR_STANDIN=1 it starts a tiny line-based stand-in server instead,
whose commands (ENV, READ, LIST, CONNECT, NET, ...) let tests look inside; DACBR_STANDIN_FAIL=msg makes the
runscript print msg and exit 3.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dacbench_remote.images.sif import write_sif
from dacbench_remote.runtimes.rootfs import mount_base_dir
from tests.needs import need_tools

REPO = Path(__file__).resolve().parents[2]
SHARED_DIR = Path("/var/tmp/dacbench-remote-tests")
SUITE = "bookworm"
DEB_PACKAGES = ["python3", "libstdc++6"]
PIP_PACKAGES = ["numpy", "Pyro5", "gymnasium"]
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"

STANDIN_SERVER = r'''
"""Stand-in server: one line in, one line out, over a UNIX socket; exits when stdin closes."""
import os, signal, socket, subprocess, sys, threading

path = sys.argv[sys.argv.index("--socket") + 1]

def bye(*_):
    try:
        os.unlink(path)
    except OSError:
        pass
    os._exit(0)

def answer(line):
    cmd, _, arg = line.partition(" ")
    if cmd == "PING":
        return "PONG"
    if cmd == "ENV":
        return os.environ.get(arg, "<unset>")
    if cmd == "READ":
        try:
            with open(arg) as handle:
                return handle.read().replace("\n", "\\n")
        except OSError as exc:
            return f"<error: {exc.strerror}>"
    if cmd == "WRITE":
        try:
            with open(arg, "w") as handle:
                handle.write("x")
            return "written"
        except OSError as exc:
            return f"<error: {exc.strerror}>"
    if cmd == "NET":
        return ",".join(sorted(name for _, name in socket.if_nameindex()))
    if cmd == "IDS":
        return f"{os.getuid()} {os.getpid()}"
    if cmd == "SPAWN":
        return str(subprocess.Popen(["sleep", "600"]).pid)
    if cmd == "ARGV":
        return " ".join(sys.argv[1:])
    if cmd == "LIST":
        try:
            return " ".join(sorted(os.listdir(arg)))
        except OSError as exc:
            return f"<error: {exc.strerror}>"
    if cmd == "CONNECT":
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(arg)
            return "connected"
        except OSError as exc:
            return f"<error: {exc.strerror}>"
        finally:
            probe.close()
    return "ECHO " + line

def serve(connection):
    with connection, connection.makefile("rw") as stream:
        for line in stream:
            stream.write(answer(line.rstrip("\n")) + "\n")
            stream.flush()

signal.signal(signal.SIGTERM, bye)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(8)
if "--exit-on-stdin-close" in sys.argv:
    threading.Thread(target=lambda: (sys.stdin.buffer.read(), bye()), daemon=True).start()
print("stand-in listening on", path, flush=True)
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
'''

RUNSCRIPT = """#!/bin/sh
if [ -n "$DACBR_STANDIN_FAIL" ]; then
    echo "stand-in runscript failing on purpose: $DACBR_STANDIN_FAIL" >&2
    exit 3
fi
if [ "$DACBR_STANDIN" = "1" ]; then
    exec python3 /opt/dacbr-standin/server.py "$@"
fi
exec python3 -m dacbench_remote.server "$@"
"""

ENV_SCRIPT = """#!/bin/sh
export DACBR_IMAGE_VAR=from-image
export DACBR_OVERRIDE=image-value
"""

DEFFILE = f"""Bootstrap: debootstrap
OSVersion: {SUITE}

%labels
    org.dacbench-remote.test-image standin

%runscript
{RUNSCRIPT}"""


def apt_sources() -> list[str]:
    """The build host's enabled apt source files: the mirror comes from there, never from us."""
    found = [str(p) for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    found += [str(p) for p in sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    if Path("/etc/apt/sources.list").is_file():
        found.append("/etc/apt/sources.list")
    return found


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _package_sources() -> list[tuple[str, str]]:
    package = REPO / "dacbench_remote"
    return [(p.relative_to(REPO).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(package.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _base_rootfs() -> Path:
    """Debian + python3 + the pip packages, cached by the inputs that define it."""
    sources = apt_sources()
    key = _digest(SUITE, DEB_PACKAGES, PIP_PACKAGES,
                  [(s, Path(s).read_text()) for s in sources], sys.version_info[:2])
    base = SHARED_DIR / f"rootfs-{key}"
    if (base / ".complete").exists():
        return base
    with _locked(SHARED_DIR / "rootfs.lock"):
        if (base / ".complete").exists():
            return base
        for stale in SHARED_DIR.glob("rootfs-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = base.with_name(base.name + ".tmp")
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=essential",
             f"--include={','.join(DEB_PACKAGES)}", SUITE, str(work), *sources],
            check=True, stdin=subprocess.DEVNULL,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-warn-conflicts",
             "--target", str(work / SITE_PACKAGES), "--only-binary=:all:",
             "--python-version", "3.11", "--implementation", "cp",
             "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
             *PIP_PACKAGES],
            check=True, stdin=subprocess.DEVNULL,
        )
        (work / ".complete").touch()
        work.rename(base)
    return base


def build_standin_image() -> Path:
    """The cached test image; rebuilt when its recipe, the package source or sif.py change."""
    need_tools("mmdebstrap", "mksquashfs")
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(SHARED_DIR, 0o755)
    base = _base_rootfs()
    key = _digest(base.name, STANDIN_SERVER, RUNSCRIPT, ENV_SCRIPT, DEFFILE, _package_sources())
    image = SHARED_DIR / f"standin-{key}.sif"
    if image.exists():
        os.utime(image)  # in use: other checkouts' runs prune only images unused for a day
        return image
    with _locked(SHARED_DIR / "standin.lock"):
        if image.exists():
            return image
        with tempfile.TemporaryDirectory(dir=SHARED_DIR, prefix="standin-build-") as tmp:
            root = Path(tmp) / "rootfs"
            subprocess.run(["cp", "-al", str(base), str(root)], check=True)
            (root / ".complete").unlink()
            meta = root / ".singularity.d"
            (meta / "env").mkdir(parents=True)
            _write(meta / "runscript", RUNSCRIPT, 0o755)
            _write(meta / "env" / "90-environment.sh", ENV_SCRIPT, 0o755)
            _write(root / "opt/dacbr-standin/server.py", STANDIN_SERVER, 0o644)
            shutil.copytree(REPO / "dacbench_remote", root / SITE_PACKAGES / "dacbench_remote",
                            ignore=shutil.ignore_patterns("__pycache__"))
            squashfs = Path(tmp) / "rootfs.squashfs"
            subprocess.run(["mksquashfs", str(root), str(squashfs), "-noappend", "-quiet",
                            "-no-progress", "-comp", "zstd", "-Xcompression-level", "3"],
                           check=True, stdout=subprocess.DEVNULL)
            # Other keys' images may belong to another checkout's run going on now: remove
            # only those unused for a day.
            cutoff = time.time() - 24 * 3600
            for stale in SHARED_DIR.glob("standin-*.sif"):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink(missing_ok=True)
            write_sif(image, deffile=DEFFILE.encode(), squashfs_path=squashfs,
                      labels={"org.dacbench-remote.test-image": "standin"})
        os.chmod(image, 0o644)
    return image


def build_tiny_image(directory: Path, *, with_runscript: bool, name: str = "tiny.sif") -> Path:
    """A few-KB image with /bin/sh (and maybe a runscript that fails): for error paths."""
    root = directory / f"{name}.rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/sh", root / "bin" / "sh")
    if with_runscript:
        (root / ".singularity.d").mkdir()
        _write(root / ".singularity.d" / "runscript", "#!/bin/sh\nexit 3\n", 0o755)
    squashfs = directory / f"{name}.squashfs"
    subprocess.run(["mksquashfs", str(root), str(squashfs), "-noappend", "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    image = directory / name
    write_sif(image, deffile=None, labels=None, squashfs_path=squashfs)
    return image


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


# --- observing what is left ------------------------------------------------------------------

def wait_until(condition, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def processes_of(uid: int, marker: str | None = None) -> dict[int, str]:
    """Live (non-zombie) processes of `uid`: pid -> command line.

    With `marker` ("NAME=value"), only processes whose environment holds it: the test user is
    shared with other tests, so a test marks the processes it starts and counts only those.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            if marker and marker.encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except (OSError, IndexError):
            continue
        if state != "Z":
            found[int(entry.name)] = cmdline
    return found


def tree_of(pid: int) -> set[int]:
    """`pid` and all its descendants."""
    tree, queue = {pid}, [pid]
    while queue:
        current = queue.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            if child not in tree:
                tree.add(child)
                queue.append(child)
    return tree


def squashfuse_daemons(image: Path | str = "") -> set[int]:
    """Our squashfuse(_ll) processes, optionally only those serving `image`."""
    return {pid for pid, cmd in processes_of(os.getuid()).items()
            if os.path.basename(cmd.split(" ", 1)[0]).startswith("squashfuse")
            and str(image) in cmd}


def fuse_mounts() -> list[str]:
    """FUSE mounts in the host's mount table (squashfuse mounts show up here)."""
    return [line for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[2].startswith("fuse")]


def runtime_mounts(starter: int | None = None) -> list[str]:
    """Mount points the bwrap runtime made for processes `starter` (default: this one)."""
    prefix = f"{mount_base_dir(create=False)}/{starter or os.getpid()}-"
    return [line.split()[1] for line in fuse_mounts() if line.split()[1].startswith(prefix)]


def talk(path: str | Path, line: str, timeout: float = 10.0) -> str:
    """Send one line to a stand-in server and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode().rstrip("\n")


def accepts(path: str | Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True
