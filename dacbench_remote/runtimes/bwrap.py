"""The bwrap runtime: run a .sif image without Apptainer and without root, using bubblewrap.

The image's root filesystem is squashfuse-mounted where /dev/fuse is usable, otherwise extracted
once into a per-image cache; bubblewrap then starts the image's runscript with every namespace
unshared (no network unless asked), a read-only root, and only this server's own socket
directory bound in (never the user's socket root, which holds the other servers' sockets).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from ..errors import BadConfig, ImageNotFound, RuntimeUnavailable, UnrunnableImage
from ..images.sif import SifImage, check_runnable
from .base import (
    CONTAINER_SOCKET_DIR,
    ContainerRuntime,
    Launch,
    prepend_python_path,
)
from .rootfs import (
    SquashfuseMount,
    default_rootfs_cache,
    extract_rootfs,
    fuse_usable,
    image_sha256,
)

# The server's socket directory appears inside at its own path where it can (the server's Pyro5
# URIs name its socket path, so the same path on both sides is best), else as
# CONTAINER_SOCKET_DIR/<id>. A bind's mount point must exist or be creatable, and the image's
# root is read-only: /tmp and /run are tmpfs inside, where bwrap creates it.
_TMPFS_DIRS = ("/tmp", "/run")
RUNSCRIPT = "/.singularity.d/runscript"
# argv[0] of our shell inside the container: `dacbench-remote ps` finds bwrap servers by it.
LAUNCHER_NAME = "dacbench-remote-launcher"
ENV_DIR = "/.singularity.d/env"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How long start() waits for the container to take hold of a squashfuse mount before detaching.
MOUNT_HOLD_TIMEOUT = 30.0


# Seconds a server may take to shut down after its lifeline closed before it is killed.
LIFELINE_GRACE = 10


def python_path_or_value(name: str, value: str) -> str:
    """The shell word that sets `name`: PYTHONPATH goes in front of the image's own."""
    return prepend_python_path(value) if name == "PYTHONPATH" else shlex.quote(value)


def _launcher_script(env: Mapping[str, str]) -> str:
    """What runs first inside the container: the image's environment, the user's, the runscript.

    As `apptainer run` does: source /.singularity.d/env/*.sh in order, then let the variables
    the user asked for win, then run the runscript with our arguments. The runscript is not
    exec'd: the launcher stays as a watchdog over the lifeline. When the host goes away (even
    with kill -9) the server sees its stdin close and shuts down cleanly, removing its sockets;
    a server that has not exited LIFELINE_GRACE seconds later is killed. bwrap runs without
    --die-with-parent for that reason (its SIGKILL would beat the server's cleanup). Once the
    server has exited, everything else in the sandbox is killed, so the sandbox ends with it.
    """
    lines = [
        f"for script in {ENV_DIR}/*.sh; do",
        '  if [ -f "$script" ]; then . "$script"; fi',
        "done",
        *(f"export {name}={python_path_or_value(name, value)}"
          for name, value in sorted(env.items())),
        # Background jobs of a non-interactive shell get /dev/null as stdin before their own
        # redirections: hand the lifeline over on fd 3 instead.
        "exec 3<&0",
        f'{RUNSCRIPT} "$@" <&3 3<&- &',
        "server=$!",
        "(",
        """  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM""",
        "  cat >/dev/null",
        f"  sleep {LIFELINE_GRACE} & sleeper=$!",
        '  wait "$sleeper"',
        '  kill -KILL "$server" 2>/dev/null',
        ") <&3 3<&- >/dev/null 2>&1 &",
        "watchdog=$!",
        "exec 3<&-",
        """trap 'kill -TERM "$server" 2>/dev/null' TERM INT HUP""",
        # Wait at least once: a runscript that already exited (and was reaped) must still give
        # its status; a wait cut short by the trap above is repeated while the server lives.
        'while :; do wait "$server"; status=$?; kill -0 "$server" 2>/dev/null || break; done',
        # The server is gone: end what it left behind, or bwrap's init would wait for it. Only
        # as PID 1 or 2 of the sandbox's own PID namespace, where -1 means "this sandbox".
        'if [ "$$" -le 2 ]; then kill -KILL -1 2>/dev/null; else kill -TERM "$watchdog" 2>/dev/null; fi',
        'exit "$status"',
    ]
    return "\n".join(lines)


@functools.cache
def namespace_problem(bwrap: str = "bwrap") -> str | None:
    """None if bwrap can create its namespaces here, else bwrap's own explanation."""
    try:
        result = subprocess.run(
            [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
    except FileNotFoundError:
        return f"{bwrap} is not installed"
    except subprocess.TimeoutExpired:
        return "bwrap did not finish a trivial sandbox within 30 s"
    if result.returncode != 0:
        return (result.stderr.strip() or f"exit code {result.returncode}") + (
            " (unprivileged user namespaces may be disabled: see sysctl "
            "kernel.unprivileged_userns_clone / user.max_user_namespaces)"
        )
    return None


def bwrap_problem() -> str | None:
    """None if the bwrap runtime can work here, else what is missing and how to install it."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    if shutil.which("unsquashfs") is None and not fuse_usable():
        return ("neither unsquashfs nor a usable squashfuse is available "
                "(apt-get install squashfs-tools)")
    return namespace_problem()


class BwrapRuntime(ContainerRuntime):
    """Start the server from a .sif image with bubblewrap: rootless, no Apptainer needed.

    `use_fuse`: None picks squashfuse when /dev/fuse is usable and falls back to extraction;
    True insists on squashfuse; False always extracts. `image_sha256` skips hashing when the
    caller (the image cache) already verified the digest.
    """

    name = "bwrap"
    def __init__(
        self,
        image: str | os.PathLike,
        *,
        binds: Iterable = (),
        env: Mapping[str, str] | None = None,
        network: bool = False,
        extract_cache: str | os.PathLike | None = None,
        use_fuse: bool | None = None,
        image_sha256: str | None = None,
        bwrap: str = "bwrap",
    ):
        super().__init__(image, binds=binds, env=env)
        self.network = network
        self.extract_cache = Path(extract_cache) if extract_cache else default_rootfs_cache()
        self.use_fuse = use_fuse
        self.bwrap = bwrap
        self._sha256 = image_sha256
        self._partition_offset: int | None = None
        self._rootfs: Path | None = None
        self._mode: str | None = None  # "squashfuse" or "extracted", decided by prepare()
        self._facts: dict = {}
        self._lock = threading.Lock()

    # --- preparation ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the tools and the image; extract the root filesystem unless it is mounted."""
        with self._lock:
            if self._mode is not None:
                return
            started = time.monotonic()
            if shutil.which(self.bwrap) is None:
                raise RuntimeUnavailable(
                    f"{self.bwrap} (bubblewrap) is not installed; install it, e.g. "
                    "`apt-get install bubblewrap`, or use runtime='apptainer'"
                )
            problem = namespace_problem(self.bwrap)
            if problem:
                raise RuntimeUnavailable(f"bubblewrap cannot create a sandbox here: {problem}")
            if not self.image.is_file():
                raise ImageNotFound(f"image {self.image} does not exist or is not a file")
            sif = SifImage.open(self.image)
            self._partition_offset = sif.squashfs_partition().offset
            check_runnable(sif)
            want_fuse = fuse_usable() if self.use_fuse is None else self.use_fuse
            if want_fuse:
                self._mode = "squashfuse"
            else:
                self._extract()
            self._facts["prepare_seconds"] = round(time.monotonic() - started, 3)

    def _extract(self) -> None:
        if self._sha256 is None:
            self._sha256 = image_sha256(self.image, self.extract_cache)
        extracted = extract_rootfs(self.image, self._partition_offset, self._sha256,
                                   self.extract_cache)
        check_image_root(extracted.path, self.image)
        self._rootfs = extracted.path
        self._mode = "extracted"
        self._facts.update(extracted_now=extracted.extracted_now,
                           extract_seconds=round(extracted.seconds, 3))

    def check_binds(self, root: Path) -> None:
        """Bind sources must exist; destinations must exist in the read-only image or be in /tmp."""
        for src, dst, _ro in self.binds:
            if not os.path.exists(src):
                raise BadConfig(f"bind source {src} does not exist on this machine")
            inside_tmp = dst == "/tmp" or dst.startswith("/tmp/")
            if not inside_tmp and not os.path.lexists(root / dst.lstrip("/")):
                raise BadConfig(
                    f"bind destination {dst} does not exist in image {self.image.name}, and the "
                    "bwrap runtime cannot create it in the read-only image; bind to an existing "
                    "directory (e.g. /mnt) or to a path under /tmp"
                )

    # --- the command ----------------------------------------------------------------------
    def bwrap_argv(self, root: Path, socket_path: Path) -> list[str]:
        """The full bubblewrap command for a container rooted at `root` serving `socket_path`.

        Depends only on the arguments, the runtime's settings, the host's numeric-library
        variables (container_env) and, for network=True, which of resolv.conf/hosts the image
        has, so tests can check it exactly.
        """
        socket_path = Path(socket_path)
        inside = container_socket_dir(Path(root), socket_path.parent)
        argv = [self.bwrap, "--unshare-all"]
        if self.network:
            argv.append("--share-net")
        argv += [
            "--ro-bind", str(root), "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
        ]
        if inside.startswith("/run/"):
            argv += ["--tmpfs", "/run"]
        argv += ["--bind", str(socket_path.parent), inside]
        if self.network:  # name resolution like Apptainer's: the host's files over the image's
            for name in ("/etc/resolv.conf", "/etc/hosts"):
                if os.path.lexists(Path(root) / name.lstrip("/")):
                    argv += ["--ro-bind-try", name, name]
        for src, dst, read_only in self.binds:
            argv += ["--ro-bind" if read_only else "--bind", src, dst]
        argv += ["--chdir", "/tmp", "--clearenv"]
        for name, value in self._container_environment().items():
            argv += ["--setenv", name, value]
        argv += [
            "/bin/sh", "-c", _launcher_script(self.container_env()), LAUNCHER_NAME,
            "--socket", f"{inside}/{socket_path.name}", "--exit-on-stdin-close",
        ]
        return argv

    def _container_environment(self) -> dict[str, str]:
        """The clean base environment (as Apptainer's --cleanenv keeps it) before the image's."""
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
        return {
            "PATH": DEFAULT_PATH,
            "HOME": "/tmp",
            "USER": user,
            "LOGNAME": user,
            "LANG": "C.UTF-8",
            "APPTAINER_CONTAINER": str(self.image),
            "APPTAINER_NAME": self.image.name,
            "SINGULARITY_CONTAINER": str(self.image),
            "SINGULARITY_NAME": self.image.name,
        }

    def server_command(self, socket_path: Path) -> list[str]:
        """The command for an extracted root; squashfuse mounts are made per start() instead."""
        self.prepare()
        if self._rootfs is None:
            self._extract()
        self.check_binds(self._rootfs)
        return self.bwrap_argv(self._rootfs, socket_path)

    # --- starting ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def launch(self, socket_path: Path) -> Iterator[Launch]:
        """Extracted roots start as usual; a squashfuse mount is made for this start and
        detached once the container holds it, so it lives exactly as long as the container
        (even if this process is killed with -9)."""
        if self._mode == "extracted":
            yield Launch(self.server_command(socket_path))
            return
        try:
            mount = SquashfuseMount(self.image, self._partition_offset)
        except RuntimeUnavailable as exc:
            if self.use_fuse:
                raise
            self._facts["fuse_fallback"] = str(exc)  # e.g. fusermount not setuid: extract
            with self._lock:
                self._extract()
            yield Launch(self.server_command(socket_path))
            return
        try:
            check_image_root(mount.path, self.image)
            self.check_binds(mount.path)
            launch = Launch(self.bwrap_argv(mount.path, socket_path))
            # A socket made by this container shows it runs; one there before (a trainer
            # joining its pair's server) says nothing about it.
            socket_was_there = socket_path.exists()
            yield launch
            server = launch.server
            deadline = time.monotonic() + MOUNT_HOLD_TIMEOUT
            while (server is not None and server.alive() and not mount.held_by_tree(server.pid)
                   and (socket_was_there or not socket_path.exists())
                   and time.monotonic() < deadline):
                time.sleep(0.005)
        finally:
            mount.detach()

    def describe(self) -> dict:
        facts = {"runtime": self.name, "image": str(self.image), "network": self.network,
                 "rootfs_mode": self._mode}
        if self._sha256:
            facts["image_sha256"] = self._sha256
        if self._rootfs is not None:
            facts["rootfs"] = str(self._rootfs)
        facts.update(self._facts)
        return facts


def container_socket_dir(root: Path, host_dir: Path) -> str:
    """The server's socket directory's path inside: its host path where it can be mounted there.

    Elsewhere it is CONTAINER_SOCKET_DIR/<its name>: the name is the server's id, which `ps`
    and sweeps read from the server's `--socket` argument.
    """
    host = os.path.normpath(str(host_dir))
    if any(host.startswith(tmpfs + "/") for tmpfs in _TMPFS_DIRS) or os.path.isdir(
            root / host.lstrip("/")):
        return host
    return f"{CONTAINER_SOCKET_DIR}/{os.path.basename(host)}"


def check_image_root(root: Path, image: Path) -> None:
    """The image must be one we can start: a shell and an executable runscript."""
    runscript = root / RUNSCRIPT.lstrip("/")
    if not os.path.lexists(root / "bin/sh"):
        raise UnrunnableImage(f"image {image} has no /bin/sh; it is not a runnable root filesystem")
    if not os.path.lexists(runscript):
        raise UnrunnableImage(
            f"image {image} has no {RUNSCRIPT}; build it from a recipe whose %runscript starts "
            "`python3 -m dacbench_remote.server \"$@\"`"
        )
