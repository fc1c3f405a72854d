"""Ways of starting a server: local (plain subprocess), bwrap (rootless .sif), apptainer (.sif).

`make_runtime(name, ...)` picks one by name; "auto" prefers Apptainer, then bubblewrap.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from .._sys.apptainer import apptainer_available
from ..config import RUNTIME_NAMES
from ..errors import BadConfig, RuntimeUnavailable
from .apptainer import ApptainerRuntime
from .base import Runtime
from .bwrap import BwrapRuntime, bwrap_problem
from .local import LocalRuntime

__all__ = ["auto_runtime_name", "make_runtime"]


def auto_runtime_name() -> str:
    """The runtime "auto" resolves to here: apptainer if installed, else bwrap if it works."""
    if apptainer_available():
        return "apptainer"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    raise RuntimeUnavailable(
        "no container runtime is usable here: apptainer/singularity is not installed, and the "
        f"bwrap runtime cannot run ({problem}). Install Apptainer, or bubblewrap and "
        "squashfs-tools (`apt-get install bubblewrap squashfs-tools`), or run without a "
        "container: runtime='local' (--runtime local)"
    )


def _runtime_class(name: str) -> type[Runtime]:
    if name == "local":
        return LocalRuntime
    if name == "bwrap":
        return BwrapRuntime
    if name in ("apptainer", "singularity"):
        return ApptainerRuntime
    raise BadConfig(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIME_NAMES)}")


# What each runtime's constructor takes, read once (a sweep's workers are forked after import).
_PARAMETERS = {cls: frozenset(inspect.signature(cls.__init__).parameters)
               for cls in (LocalRuntime, BwrapRuntime, ApptainerRuntime)}


def _accepted_options(cls: type[Runtime], name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options the runtime takes; unsupported ones pass only when switched off (e.g. gpu=False)."""
    parameters = _PARAMETERS[cls]
    accepted = {}
    for key, value in options.items():
        if key in parameters:
            accepted[key] = value
        elif value not in (None, False, (), [], {}):
            raise BadConfig(f"the {name} runtime does not support {key}={value!r}")
    return accepted


def make_runtime(
    name: str,
    *,
    image: str | os.PathLike | None = None,
    python: str | None = None,
    **options: Any,
) -> Runtime:
    """Build the runtime called `name` (one of RUNTIME_NAMES).

    `image` is the .sif for bwrap/apptainer; `python` the interpreter for local. Other options
    (binds, env, network, gpu, ...) go to the runtime's constructor.
    """
    if name == "auto":
        name = auto_runtime_name()
    cls = _runtime_class(name)
    if name == "local":
        if python is not None:
            options["python"] = python
        return cls(**_accepted_options(cls, name, options))
    if image is None:
        raise BadConfig(f"the {name} runtime needs an image (a .sif file); pass image=PATH")
    return cls(image, **_accepted_options(cls, name, options))
