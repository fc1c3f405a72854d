"""The one place that finds Apptainer (or SingularityCE, or legacy Singularity) on PATH, for the
runtime, the builder and `apptainer pull` alike."""

from __future__ import annotations

import shutil
import subprocess

from ..errors import RuntimeUnavailable

# Apptainer installs `singularity` as a compatible alias; SingularityCE has only that name.
BINARY_NAMES = ("apptainer", "singularity")
INSTALL_HINT = ("install Apptainer (see apptainer.org/docs/admin/main/installation.html; on "
                "clusters try `module load apptainer`)")


def find_apptainer(binary: str | None = None) -> str:
    """The path of `binary`, else of the first of apptainer and singularity on PATH.

    Raises:
        RuntimeUnavailable: there is none; the message says what to install.
    """
    if binary:
        found = shutil.which(binary)
        if found is None:
            raise RuntimeUnavailable(f"container binary {binary!r} was not found; {INSTALL_HINT}")
        return found
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeUnavailable(f"neither apptainer nor singularity is on PATH; {INSTALL_HINT}")


def apptainer_available() -> bool:
    """True when find_apptainer() finds a binary."""
    return any(shutil.which(name) for name in BINARY_NAMES)


def apptainer_version(binary: str) -> str:
    """What `BINARY --version` prints (e.g. "apptainer version 1.3.4").

    Raises:
        RuntimeUnavailable: the binary cannot run, or says it failed.
    """
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                timeout=60, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeUnavailable(f"{binary} --version failed: {exc}") from exc
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[:300] or "no output"
        raise RuntimeUnavailable(f"{binary} --version failed (exit {result.returncode}): {output}")
    return result.stdout.strip()
