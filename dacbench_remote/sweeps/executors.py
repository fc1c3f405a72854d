"""Executors, where trials run: the `Executor` interface, the names of the executors, and what they
share (the `RunContext` of a sweep run, fetching each image once before any trial starts).

Each executor lives in its own module, `sweeps/local_executor.py` and `sweeps/slurm_executor.py`;
both call the same `run_trial` (sweeps/trial_runner.py) and differ only in who calls it and
where. The driver picks one by name (`driver.make_executor`).
"""

from __future__ import annotations

import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from ..config import CONTAINER_RUNTIMES
from ..images.resolve import resolve_image
from ..runtimes.rootfs import default_rootfs_cache, image_sha256
from .sweepdir import SweepDir
from .trial import Trial, TrialOutcome

# The executors, by the name `[executor] kind` and `sweep run --executor` take; executor NAME is
# the Executor subclass in sweeps/NAME_executor.py. The one list of them.
EXECUTORS = ("local", "slurm")


@dataclass
class RunContext:
    """What every executor needs to know about the sweep run it serves."""

    layout: SweepDir
    run_id: str
    sweep_name: str
    cancel_event: threading.Event
    on_outcome: Callable[[TrialOutcome], None]
    on_job: Callable[[str], None] = lambda job_id: None


class Executor(ABC):
    """Runs a sweep run's pending trials somewhere; `run` is the one hook an executor implements."""

    name: ClassVar[str]  # one of EXECUTORS

    @abstractmethod
    def run(self, trials: list[Trial], ctx: RunContext) -> list[TrialOutcome]:
        """Run the trials to their outcomes, passing each to `ctx.on_outcome` as it arrives.

        On any exception (Ctrl-C) set `ctx.cancel_event` and leave nothing running.
        """


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run the way Ctrl-C does (main thread only; elsewhere it is left alone):
    the executor stops its trials and commits what finished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- images ----------------------------------------------------------------------------------


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
