"""The apptainer runtime: `apptainer run` (or `singularity run`) of an image, as our child.

The server must be our own child process so that the shared lifeline (its stdin) and the
process-group stop work; spython's `Client.instance` would start a daemon we do not own, so the
command is built with spython's helpers and started by ServerProcess instead. What Apptainer
does with the command line and the environment was read from its source (apptainer/apptainer
1.5.3+); the comments name the files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from spython.main import Client

from .._sys.apptainer import apptainer_version, find_apptainer
from ..errors import BadConfig, ImageNotFound, RuntimeUnavailable, UnsafeDirectory
from ..images.sif import EXT3_MAGIC, EXT3_MAGIC_OFFSET, SQUASHFS_MAGIC, SifImage, check_runnable
from .base import CONTAINER_SOCKET_DIR, ContainerRuntime, Launch

# What else to do when Apptainer is missing, added to find_apptainer's advice.
ALTERNATIVE = "or use runtime='bwrap' (apt-get install bubblewrap squashfs-tools)"
# Apptainer reads every flag of `run` from APPTAINER_<KEY> or SINGULARITY_<KEY> too
# (pkg/cmdline/flag.go; the keys in cmd/internal/cli/action_flags.go: BIND, BINDPATH, MOUNT,
# CONTAINALL, CLEANENV, HOME, WORKDIR, NV, ...), so a site module's APPTAINER_BINDPATH would add
# binds to every server. Only these settings, which change where Apptainer keeps its own files,
# how much it logs, or unlock an encrypted image, reach the apptainer process.
KEPT_SETTINGS = frozenset({
    "CACHEDIR", "TMPDIR", "CONFIGDIR",  # where Apptainer caches, unpacks and keeps its config
    "MESSAGELEVEL", "DEBUG", "VERBOSE", "QUIET", "SILENT", "NOCOLOR",  # its own log output
    "ENCRYPTION_PASSPHRASE", "ENCRYPTION_PEM_PATH", "ENCRYPTION_PEM_DATA",  # encrypted images
})
SETTING_PREFIXES = ("APPTAINER_", "SINGULARITY_")
# APPTAINERENV_X=v sets X=v in the container whatever --cleanenv says (util/env/create.go).
INJECTION_PREFIXES = ("APPTAINERENV_", "SINGULARITYENV_")
# Forwarded into the container even with --cleanenv (alwaysPassKeys in util/env/create.go).
ALWAYS_PASSED = frozenset({"TERM", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                           "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "ftp_proxy",
                           "FTP_PROXY"})
# Where per-server work directories go (default: $TMPDIR or /tmp).
WORKDIR_ENV = "DACBENCH_REMOTE_WORKDIR"
# What Apptainer prints when a site's apptainer.conf stops us, and what to do about it.
_HINTS = (
    ("doesn't exist in container",
     "this site's apptainer.conf enables neither overlay nor underlay, so a bind destination "
     "must exist in the image or lie under /tmp: keep containall=True (the default), or set "
     "DACBENCH_REMOTE_SOCKET_DIR to a directory under /tmp"),
    ("user bind control disabled",
     "this site's apptainer.conf sets `user bind control = no`, so the server's socket cannot "
     "be bound into the container; ask the admins, or use runtime='bwrap'"),
    ("User bind control is disabled",
     "this site's apptainer.conf sets `user bind control = no`, so the server's socket cannot "
     "be bound into the container; ask the admins, or use runtime='bwrap'"),
)



def scrubbed_environment(environ: Mapping[str, str], *, cleanenv: bool) -> dict[str, str]:
    """`environ` without what would reach into a server's container behind our back.

    Dropped: APPTAINER_*/SINGULARITY_* settings except KEPT_SETTINGS, every APPTAINERENV_*/
    SINGULARITYENV_* injection, and with `cleanenv` the variables Apptainer forwards despite
    --cleanenv (TERM and the proxies).
    """
    kept = {}
    for name, value in environ.items():
        if name.startswith(INJECTION_PREFIXES) or (cleanenv and name in ALWAYS_PASSED):
            continue
        prefix = next((p for p in SETTING_PREFIXES if name.startswith(p)), "")
        if prefix and name[len(prefix):] not in KEPT_SETTINGS:
            continue
        kept[name] = value
    return kept


def injected_value(name: str, value: str) -> str:
    """The APPTAINERENV_ value that makes `name` exactly `value` inside.

    Apptainer exports injected variables as `export NAME="VALUE"` after the image's
    environment scripts, escaping only `"` (injectEnvHandler in internal/pkg/runtime/engine/
    apptainer/process_linux.go; --no-eval is not used), so $, ` and \\ would be evaluated:
    they are escaped here. PYTHONPATH keeps one expansion: it goes in front of the image's own,
    which holds the server package.
    """
    escaped = re.sub(r"([\\$`])", r"\\\1", value)
    return escaped + "${PYTHONPATH:+:$PYTHONPATH}" if name == "PYTHONPATH" else escaped


def default_work_root() -> Path:
    """Where this user's per-server work directories go: $DACBENCH_REMOTE_WORKDIR, else
    $TMPDIR (or /tmp), in a directory of our own."""
    base = Path(os.environ.get(WORKDIR_ENV) or tempfile.gettempdir())
    return base / f"dacbench-remote-work-{os.getuid()}"


def socket_dir_inside(host_dir: Path, *, contained: bool) -> str:
    """Where the server's socket directory is bound inside the container.

    With --contain(all) /tmp is Apptainer's own (the session's, or the workdir's tmp), and
    Apptainer creates bind destinations inside it even where overlay and underlay are off
    (createLayout in internal/pkg/util/fs/layout/session_linux.go): a directory under /tmp
    keeps its path, any other (e.g. /run/user/UID/...) appears as CONTAINER_SOCKET_DIR/<id>.
    Without --contain /tmp is the host's, so the host path is used as it is.
    """
    host = os.path.normpath(str(host_dir))
    if not contained or host.startswith("/tmp/"):
        return host
    return f"{CONTAINER_SOCKET_DIR}/{os.path.basename(host)}"


def check_image(path: Path) -> None:
    """Refuse what Apptainer would not start: it runs SIF files (checked as its pkg/image/sif.go
    does), sandbox directories, and plain squashfs and ext3 images."""
    if path.is_dir():
        return
    if not path.is_file():
        raise ImageNotFound(f"image {path} does not exist (give a .sif file or a sandbox "
                            "directory)")
    with open(path, "rb") as handle:
        head = handle.read(EXT3_MAGIC_OFFSET + len(EXT3_MAGIC))
    if head[:4] == SQUASHFS_MAGIC or head[EXT3_MAGIC_OFFSET:] == EXT3_MAGIC:
        return
    check_runnable(SifImage.open(path))


class ApptainerRuntime(ContainerRuntime):
    """Start the server with `apptainer run --containall --cleanenv IMAGE --socket PATH`.

    Only the server's own socket directory is bound, and the apptainer process gets a scrubbed
    environment (no site binds or injected variables); the user's other servers stay out of
    reach. `env` reaches the container as APPTAINERENV_*/SINGULARITYENV_* variables, which
    survive --cleanenv; `gpu=True` adds --nv. With containall, each server gets a private
    --workdir (under `workdir`, default $DACBENCH_REMOTE_WORKDIR or $TMPDIR) for its /tmp,
    /var/tmp and $HOME instead of Apptainer's 64 MB session directory, removed when it stops.
    """

    name = "apptainer"
    def __init__(
        self,
        image: str | os.PathLike,
        *,
        binds: Iterable = (),
        env: Mapping[str, str] | None = None,
        gpu: bool = False,
        containall: bool = True,
        cleanenv: bool = True,
        binary: str | None = None,
        workdir: str | os.PathLike | None = None,
    ):
        if containall and not cleanenv:
            # internal/pkg/runtime/launch/launcher_linux.go: --containall sets CleanEnv.
            raise BadConfig("cleanenv=False has no effect with containall=True (Apptainer's "
                            "--containall implies --cleanenv); pass containall=False as well "
                            "to let the host's environment in")
        super().__init__(image, binds=binds, env=env)
        self.gpu = gpu
        self.containall = containall
        self.cleanenv = cleanenv
        self.work_root = Path(workdir).absolute() if workdir else None
        self.requested_binary = binary
        self.binary: str | None = None
        self.version: str | None = None

    def prepare(self) -> None:
        """Find the binary, check the image and the binds (cheap; nothing is unpacked)."""
        if self.binary is None:
            try:
                self.binary = find_apptainer(self.requested_binary)
            except RuntimeUnavailable as exc:
                raise RuntimeUnavailable(f"{exc}, {ALTERNATIVE}") from None
            self.version = apptainer_version(self.binary)
        check_image(self.image)
        for src, _dst, _ro in self.binds:
            if not os.path.exists(src):
                raise BadConfig(f"bind source {src} does not exist on this machine")

    def run_argv(self, binary: str, socket_path: Path, workdir: Path | None = None) -> list[str]:
        """The exact command line for `binary` (no I/O, so tests can check it)."""

        socket_path = Path(socket_path)
        inside = socket_dir_inside(socket_path.parent, contained=self.containall)
        flags = []
        if self.containall:
            flags.append("--containall")
        if self.cleanenv:
            flags.append("--cleanenv")
        if self.gpu:
            flags.append("--nv")
        if workdir is not None:
            flags += ["--workdir", str(workdir)]
        host = str(socket_path.parent)
        flags += ["--bind", host if inside == host else f"{host}:{inside}"]
        for src, dst, read_only in self.binds:
            flags += ["--bind", f"{src}:{dst}" + (":ro" if read_only else "")]
        # spython's builder knows the action layout (and adds --quiet/--debug when the client
        # is set so); it always says "singularity", so put the binary we found in its place.
        argv = Client._init_command("run") + flags
        argv[0] = binary
        return [*argv, str(self.image), "--socket", f"{inside}/{socket_path.name}",
                "--exit-on-stdin-close"]

    def server_command(self, socket_path: Path) -> list[str]:
        self.prepare()
        return self.run_argv(self.binary, socket_path)

    @contextlib.contextmanager
    def launch(self, socket_path: Path) -> Iterator[Launch]:
        """One start: with containall, in a fresh work directory removed when it stops."""
        self.prepare()
        workdir = self._new_workdir(socket_path) if self.containall else None
        launch = Launch(self.run_argv(self.binary, socket_path, workdir))
        if workdir is not None:
            launch.on_stop.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
        try:
            yield launch
        except BaseException:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _new_workdir(self, socket_path: Path) -> Path:
        """A private directory named after the server (its socket directory's name).

        A second container on the same socket (a trainer joining its pair's server) gets a
        fresh private directory inside the first's, so the two never share a /tmp; `cleanup`
        removes both with the server's id.
        """
        root = self.work_root or default_work_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = root.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise UnsafeDirectory(f"work directory root {root} is not a directory owned by you; "
                                  f"remove it, or set {WORKDIR_ENV} to a directory of your own")
        workdir = root / Path(socket_path).parent.name
        try:
            workdir.mkdir(mode=0o700)
        except FileExistsError:
            return Path(tempfile.mkdtemp(prefix="joined-", dir=workdir))
        return workdir

    def env_prefix(self) -> str:
        """APPTAINERENV_ for Apptainer; SingularityCE and Singularity 3 read SINGULARITYENV_."""
        flavour = self.version or os.path.basename(self.binary or self.requested_binary or "")
        return "APPTAINERENV_" if "apptainer" in flavour.lower() else "SINGULARITYENV_"

    def environment(self) -> dict[str, str]:
        env = scrubbed_environment(os.environ, cleanenv=self.cleanenv)
        prefix = self.env_prefix()
        for name, value in self.container_env().items():
            env[prefix + name] = injected_value(name, value)
        return env

    def explain_output(self, output: str) -> str | None:
        return next((hint for needle, hint in _HINTS if needle in output), None)

    def describe(self) -> dict:
        return {"runtime": self.name, "image": str(self.image), "binary": self.binary,
                "version": self.version, "gpu": self.gpu}
