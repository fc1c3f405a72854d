"""The one place that finds Apptainer (or SingularityCE, or legacy Singularity) on PATH, for the
runtime, the builder and `apptainer pull` alike."""

from __future__ import annotations

import shutil

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
