"""The apptainer runtime: `apptainer run` (or `singularity run`) of a .sif image, as our child.

The server must be our own child process so that the shared lifeline (its stdin) and the
process-group stop work; spython's `Client.instance` would start a daemon we do not own, so the
command is built with spython's helpers and started by ServerProcess instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from spython.main import Client
from spython.utils import run_command

from .._sys.apptainer import find_apptainer
from ..errors import BadConfig, ImageNotFound, RuntimeUnavailable
from ..images.sif import SifImage
from .base import Runtime, check_env_names, parse_bind

# What else to do when Apptainer is missing, added to find_apptainer's advice.
ALTERNATIVE = "or use runtime='bwrap' (apt-get install bubblewrap squashfs-tools)"


def apptainer_version(binary: str) -> str:
    """`BINARY --version` through spython (e.g. "apptainer version 1.3.4")."""

    result = run_command([binary, "--version"], quiet=True)
    message = result.get("message") or []
    text = "".join(message) if isinstance(message, list) else str(message)
    if result.get("return_code") != 0:
        raise RuntimeUnavailable(f"{binary} --version failed: {text.strip() or 'no output'}")
    return text.strip()


class ApptainerRuntime(Runtime):
    """Start the server with `apptainer run --containall --cleanenv IMAGE --socket PATH`.

    Only the server's own socket directory is bound (at the same path inside, so the server's
    socket is the host's); the user's other servers stay out of reach.
    `env` reaches the container as APPTAINERENV_*/SINGULARITYENV_* variables, which survive
    --cleanenv; `gpu=True` adds --nv.
    """

    name = "apptainer"
    binds_socket_dir = True

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
    ):
        self.image = Path(image).absolute()
        self.binds = [parse_bind(spec) for spec in binds]
        self.env = check_env_names(dict(env or {}))
        self.gpu = gpu
        self.containall = containall
        self.cleanenv = cleanenv
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
        if not self.image.is_file():
            raise ImageNotFound(f"image {self.image} does not exist or is not a file")
        SifImage.open(self.image)
        for src, _dst, _ro in self.binds:
            if not os.path.exists(src):
                raise BadConfig(f"bind source {src} does not exist on this machine")

    def run_argv(self, binary: str, socket_path: Path) -> list[str]:
        """The exact command line for `binary` (no I/O, so tests can check it)."""

        socket_path = Path(socket_path)
        flags = []
        if self.containall:
            flags.append("--containall")
        if self.cleanenv:
            flags.append("--cleanenv")
        if self.gpu:
            flags.append("--nv")
        flags += ["--bind", str(socket_path.parent)]
        for src, dst, read_only in self.binds:
            flags += ["--bind", f"{src}:{dst}" + (":ro" if read_only else "")]
        # spython's builder knows the action layout (and adds --quiet/--debug when the client
        # is set so); it always says "singularity", so put the binary we found in its place.
        argv = Client._init_command("run") + flags
        argv[0] = binary
        return [*argv, str(self.image), "--socket", str(socket_path), "--exit-on-stdin-close"]

    def server_command(self, socket_path: Path) -> list[str]:
        self.prepare()
        return self.run_argv(self.binary, socket_path)

    def env_prefix(self) -> str:
        """APPTAINERENV_ for Apptainer; SingularityCE and Singularity 3 read SINGULARITYENV_."""
        flavour = self.version or os.path.basename(self.binary or self.requested_binary or "")
        return "APPTAINERENV_" if "apptainer" in flavour.lower() else "SINGULARITYENV_"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        prefix = self.env_prefix()
        for name, value in self.env.items():
            env[prefix + name] = value
        return env

    def describe(self) -> dict:
        return {"runtime": self.name, "image": str(self.image), "binary": self.binary,
                "version": self.version, "gpu": self.gpu}
