"""What a test needs from the machine: missing tools and packages fail, only allowlisted ones skip.

`scripts/install-deps.sh --test` installs every tool and package named here, so their absence
is a broken setup, not a reason to skip. The allowed skips are in tests/skip_allowlist.py.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

from .skip_allowlist import NO_APPTAINER, NO_DEV_FUSE

INSTALL = "run `bash scripts/install-deps.sh --test` (CI does)"
# The Debian package of each tool the tests call.
PACKAGES = {
    "bwrap": "bubblewrap", "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
    "squashfuse": "squashfuse", "fusermount": "fuse3", "mmdebstrap": "mmdebstrap",
    "siftool": "siftool", "newuidmap": "uidmap", "runuser": "util-linux", "useradd": "passwd",
    "mount": "mount", "umount": "mount", "chroot": "coreutils", "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "squeue": "slurm-wlm", "scancel": "slurm-wlm",
    "munged": "munge", "docker-registry": "docker-registry", "htpasswd": "apache2-utils",
    "openssl": "openssl",
}


def need_tools(*tools: str) -> None:
    """Fail the test, naming the Debian packages, unless every tool is on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = sorted({PACKAGES.get(tool, tool) for tool in missing})
        pytest.fail(f"{', '.join(missing)} not installed (apt-get install {' '.join(packages)}); "
                    f"{INSTALL}", pytrace=False)


def need_module(name: str) -> ModuleType:
    """The imported module; fails the test (or the collection of its file) when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"Python package {name} is missing ({exc}); {INSTALL}", pytrace=False)


def need_root(what: str) -> None:
    """Skip unless root; CI runs as root, so there the skip fails the run."""
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (CI runs the suite as root)")


def need_fuse() -> None:
    """squashfuse and fusermount must be installed; a machine without /dev/fuse may skip."""
    need_tools("squashfuse", "fusermount")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip(NO_DEV_FUSE)


def need_apptainer() -> None:
    """Skip (allowed) where neither apptainer nor singularity is installed."""
    if shutil.which("apptainer") is None and shutil.which("singularity") is None:
        pytest.skip(NO_APPTAINER)
