"""The files Apptainer puts under `/.singularity.d` of an image, made from a parsed recipe.

Runtimes (ours and Apptainer) find the runscript, environment, labels and test there, so an image
from our builder must keep them where `apptainer build` keeps them.
"""

from __future__ import annotations

import json
import time

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
ENV_PATH = (
    "#!/bin/sh\n"
    "if [ -z \"${PATH:-}\" ]; then\n"
    "    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    "fi\n"
    "export PATH\n"
)
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


def labels_for(recipe: Recipe, *, arch: str = "amd64", builder: str = "",
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
        "env/99-base.sh": (ENV_PATH, 0o755),
    }
    for name, script in ACTIONS.items():
        files[f"actions/{name}"] = (script, 0o755)
    if recipe.help:
        files["runscript.help"] = (recipe.help + "\n", 0o644)
    if recipe.test:
        files["test"] = (SCRIPT_HEADER + recipe.test + "\n", 0o755)
    return files
