"""The files Apptainer puts under `/.singularity.d` of an image, made from a parsed recipe.

Runtimes (ours and Apptainer) find the runscript, environment, labels and test there, so an image
from our builder must keep them where `apptainer build` keeps them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .recipe import Recipe

SCRIPT_HEADER = "#!/bin/sh\n\n"

# Minimal equivalents of Apptainer's action scripts: load the environment files in order, then
# run what was asked for.
_LOAD_ENVIRONMENT = """for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"""
ACTIONS = {
    "exec": f"#!/bin/sh\n{_LOAD_ENVIRONMENT}exec \"$@\"\n",
    "run": f"#!/bin/sh\n{_LOAD_ENVIRONMENT}exec /.singularity.d/runscript \"$@\"\n",
    "shell": f"#!/bin/sh\n{_LOAD_ENVIRONMENT}exec /bin/sh \"$@\"\n",
    "start": f"#!/bin/sh\n{_LOAD_ENVIRONMENT}exec /.singularity.d/startscript \"$@\"\n",
    "test": f"#!/bin/sh\n{_LOAD_ENVIRONMENT}exec /bin/sh /.singularity.d/test \"$@\"\n",
}
ENV_BASE = "#!/bin/sh\n# Base environment, as in Apptainer's 01-base.sh.\n"
# Apptainer's own 99-base.sh (internal/pkg/build/sources/99-base.sh): --nv and --rocm bind the
# host's GPU libraries into /.singularity.d/libs, which must be on the library path. PATH is
# set only where nothing set it (Apptainer and bwrap both do).
ENV_BASE_99 = """#!/bin/sh
# As Apptainer's 99-base.sh: GPU libraries bound by --nv/--rocm live in /.singularity.d/libs.
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH="/.singularity.d/libs"
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi

if [ -z "${PS1:-}" ]; then
    PS1="Apptainer> "
fi
if [ -z "${PATH:-}" ]; then
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fi
export LD_LIBRARY_PATH PS1 PATH
"""
NO_RUNSCRIPT = 'echo "There is no runscript defined for this container"\n'
# Directories and empty files runtimes bind over; a bind needs its mount point in a read-only root.
MOUNT_DIRS = ("proc", "sys", "dev", "tmp", "var/tmp", "home", "root", "etc", "mnt", "opt", "srv")
MOUNT_FILES = ("etc/hosts", "etc/resolv.conf")
SYMLINKS = {
    "singularity": ".singularity.d/runscript",
    ".run": ".singularity.d/actions/run",
    ".exec": ".singularity.d/actions/exec",
    ".test": ".singularity.d/actions/test",
    ".shell": ".singularity.d/actions/shell",
    "environment": ".singularity.d/env/90-environment.sh",
}


# Stands for the build date in labels.json until the build has chosen its epoch.
BUILD_DATE_PLACEHOLDER = "@@DACBENCH_REMOTE_BUILD_DATE@@"


def build_date(epoch: int) -> str:
    """The build-date label Apptainer writes (`Monday_1_January_2024_00:00:00_UTC`), for `epoch`."""
    return time.strftime("%A_%-d_%B_%Y_%H:%M:%S_UTC", time.gmtime(epoch))


def labels_for(recipe: Recipe, *, arch: str, builder: str = "",
               build_date: str = BUILD_DATE_PLACEHOLDER) -> dict[str, str]:
    """The image's labels: the recipe's %labels plus the label-schema ones Apptainer adds."""
    labels = {
        "org.label-schema.build-arch": arch,
        "org.label-schema.build-date": build_date,
        "org.label-schema.schema-version": "1.0",
        "org.label-schema.usage.singularity.deffile.bootstrap": recipe.bootstrap,
        "org.label-schema.usage.singularity.deffile.osversion": recipe.os_version,
    }
    if builder:
        labels["org.dacbench-remote.builder"] = builder
    labels.update(recipe.labels)
    return labels


def singularity_files(recipe: Recipe, labels: dict[str, str]) -> dict[str, tuple[str, int]]:
    """Path under `/.singularity.d` → (content, mode) for everything a recipe defines."""
    files: dict[str, tuple[str, int]] = {
        "Singularity": (recipe.text, 0o644),
        "labels.json": (json.dumps(labels, indent=4, sort_keys=True) + "\n", 0o644),
        "runscript": (SCRIPT_HEADER + (recipe.runscript + "\n" if recipe.runscript
                                       else NO_RUNSCRIPT), 0o755),
        "startscript": ("#!/bin/sh\n", 0o755),
        "env/01-base.sh": (ENV_BASE, 0o755),
        "env/90-environment.sh": (
            "#!/bin/sh\n# Custom environment shell code should follow\n\n"
            + (recipe.environment + "\n" if recipe.environment else ""), 0o755),
        "env/99-base.sh": (ENV_BASE_99, 0o755),
    }
    for name, script in ACTIONS.items():
        files[f"actions/{name}"] = (script, 0o755)
    if recipe.help:
        files["runscript.help"] = (recipe.help + "\n", 0o644)
    if recipe.test:
        files["test"] = (SCRIPT_HEADER + recipe.test + "\n", 0o755)
    return files


# What `apptainer inspect --all` reads from /.singularity.d (cmd/internal/cli/inspect.go), in the
# order of the Attributes struct (pkg/inspect/metadata.go) that inspect-metadata.json encodes.
INSPECT_FILES = {"runscript": "runscript", "test": "test", "helpfile": "runscript.help",
                 "deffile": "Singularity", "startscript": "startscript"}
INSPECT_ENV_GLOBS = ("10-docker*.sh", "9*-environment.sh")


def inspect_attributes(singularity_d: Path) -> dict:
    """Apptainer's inspect attributes of an image whose /.singularity.d is (a copy) at
    `singularity_d`: what `apptainer build` stores as inspect-metadata.json, so that
    `apptainer inspect --runscript/--environment` and `run-help` work on our images.

    As inspect's shell snippet and setAttribute: each file's text without trailing newlines,
    empty ones left out; the environment keyed by the files' paths inside the image.
    """
    def text(path: Path) -> str:
        return path.read_text(errors="replace").rstrip("\n")

    environment = {}
    for pattern in INSPECT_ENV_GLOBS:
        for path in sorted((singularity_d / "env").glob(pattern)):
            if path.is_file():
                environment[f"/.singularity.d/env/{path.name}"] = text(path)
    labels_file = singularity_d / "labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.is_file() else {}
    attributes: dict = {"environment": environment, "labels": labels}
    for key, name in INSPECT_FILES.items():
        if (singularity_d / name).is_file():
            attributes[key] = text(singularity_d / name)
    return attributes
