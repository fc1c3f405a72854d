"""Where a catalog source's bytes come from, by its scheme: HTTP(S) and local files (download),
OCI registries in pure Python (registry), library:// and docker:// through `apptainer pull`."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path

from spython.main import Client
from spython.utils import stream_command

from .._sys.apptainer import find_apptainer
from .._sys.files import sha256_file
from ..errors import RegistryError, RuntimeUnavailable
from .download import Fetched, SourceFailed, copy_local, download_http
from .registry import pull_sif


def fetch_source(source: str, part: Path, *, connect_timeout: float = 15.0,
                 read_timeout: float = 60.0, attempts: int = 3, label: str = "",
                 progress: bool = True, expected_sha256: str = "") -> Fetched:
    """Bring one catalog source into `part` (HTTP(S), OCI registry, Apptainer URI or local path).

    oras:// goes to the registry in pure Python (see registry.py), which refuses a manifest
    whose layer is not `expected_sha256` before downloading; library:// and docker:// need
    Apptainer. Raises SourceFailed when this source cannot deliver (the caller tries the next).
    """
    if source.startswith(("https://", "http://")):
        return download_http(source, part, connect_timeout=connect_timeout,
                             read_timeout=read_timeout, attempts=attempts, label=label,
                             progress=progress)
    if source.startswith("oras://"):
        try:
            return pull_sif(source, part, connect_timeout=connect_timeout,
                            read_timeout=read_timeout, attempts=attempts, label=label,
                            progress=progress, expected_sha256=expected_sha256)
        except RegistryError as exc:
            raise SourceFailed(str(exc)) from exc
    if source.startswith(("library://", "docker://")):
        return pull_apptainer(source, part, progress=progress)
    return copy_local(Path(source.removeprefix("file://")), part, label=label, progress=progress)


def pull_apptainer(uri: str, part: Path, *, progress: bool = True) -> Fetched:
    """`apptainer pull` a library:// or docker:// image into `part` (the command as spython
    builds it, run with the binary find_apptainer finds)."""
    try:
        binary = find_apptainer()
    except RuntimeUnavailable:
        raise SourceFailed(
            f"Apptainer (or SingularityCE) is not installed; it is needed to pull "
            f"{uri.split('://', 1)[0]}:// sources. Install Apptainer or add an https:// or "
            "oras:// source to the catalog") from None
    command = Client._init_command("pull")  # spython always says "singularity"
    command[0] = binary
    command += ["--name", str(part), "--force", uri]
    part.unlink(missing_ok=True)
    tail: deque[str] = deque(maxlen=15)
    try:
        for line in stream_command(command, sudo=False, output_type="stderr"):
            tail.append(line.rstrip())
            if progress:
                sys.stderr.write(line)
    except subprocess.CalledProcessError as exc:
        part.unlink(missing_ok=True)
        output = "\n".join(tail) or "(no output)"
        raise SourceFailed(f"apptainer pull exited with {exc.returncode}:\n{output}") from exc
    except OSError as exc:
        raise SourceFailed(f"cannot run apptainer pull: {exc}") from exc
    if not part.is_file():
        raise SourceFailed(f"apptainer pull reported success but wrote no {part.name}")
    return Fetched(sha256_file(part))
