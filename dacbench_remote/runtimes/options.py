"""RuntimeOptions: where and how a server runs, in the one form RemoteRunner, sweeps and repeats take."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RuntimeOptions:
    """How a server is started; results never depend on it (so it is no part of a trial id).

    Args:
        kind: one of config.RUNTIME_NAMES.
        image: a .sif to run instead of the catalog's (container runtimes).
        python: the interpreter of the local runtime.
        binds: `src[:dst[:ro|rw]]` binds into the container.
        env: environment variables set inside the container.
        gpu: the host's GPUs inside (Apptainer's --nv).
        startup_timeout, call_timeout: seconds for the server to answer at start, and per call.
        provenance: what the image cache said about `image` when it was fetched (sha256,
            experiment, origin), recorded with results instead of hashing the image again.
    """

    kind: str = "auto"
    image: str | None = None
    python: str | None = None
    binds: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    gpu: bool = False
    startup_timeout: float = 60.0
    call_timeout: float = 300.0
    provenance: dict = field(default_factory=dict)

    def replace(self, **changes: Any) -> RuntimeOptions:
        return dataclasses.replace(self, **changes)

    def key(self) -> str:
        """A text that is equal for options that start the same server (provenance aside)."""
        return repr(dataclasses.replace(self, provenance={}))
