"""Each image a sweep's trials need, fetched (resolved, downloaded or built, verified) once
before any trial starts, and the trials pinned to the files. Apart from executors.py because it
needs the image cache (and its HTTP client), which status, report and the CLI's start do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..config import CONTAINER_RUNTIMES
from ..images.resolve import resolve_image
from ..runtimes.rootfs import default_rootfs_cache, image_sha256
from .trial import Trial


def fetch_image(benchmark: str, experiment: str | None) -> tuple[str, dict]:
    """The one place sweeps touch the image cache: resolve, fetch and verify once.

    Like RemoteRunner, it builds the image from its packaged recipe when it can be neither
    found in the cache nor downloaded. Returns the image path and its provenance (sha256,
    experiment id, origin) for the results.
    """
    path, provenance = resolve_image(benchmark, experiment, build=True)
    return str(path), provenance


Fetch = Callable[[str, "str | None"], "tuple[str, dict]"]


def prefetch_images(trials: list[Trial], fetch: Fetch | None = None) -> list[Trial]:
    """Fetch each image the trials need once, before any trial starts; pin trials to the files.

    An image that cannot be had stops the sweep here, before any trial starts.
    """
    fetch = fetch or fetch_image
    fetched: dict[tuple[str, str | None], tuple[str, dict]] = {}
    hashed: dict[str, str] = {}
    pinned = []
    for trial in trials:
        runtime = trial.runtime
        if runtime.kind not in CONTAINER_RUNTIMES:
            pinned.append(trial)
            continue
        if runtime.image is not None:
            # A given image is hashed once here, for the results, instead of once per trial
            # (and remembered while its path, size and mtime hold, as the bwrap runtime does).
            if runtime.image not in hashed:
                try:
                    hashed[runtime.image] = image_sha256(Path(runtime.image),
                                                         default_rootfs_cache())
                except OSError:  # each trial reports the unreadable image itself
                    hashed[runtime.image] = ""
            if hashed[runtime.image] and not runtime.provenance:
                runtime = runtime.replace(provenance={"sha256": hashed[runtime.image]})
            pinned.append(replace(trial, runtime=runtime))
            continue
        key = (trial.benchmark, trial.experiment)
        if key not in fetched:
            fetched[key] = fetch(*key)
        image, provenance = fetched[key]
        pinned.append(replace(trial, runtime=runtime.replace(image=image,
                                                             provenance=dict(provenance))))
    return pinned
