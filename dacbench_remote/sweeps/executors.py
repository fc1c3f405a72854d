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
from dataclasses import dataclass
from typing import ClassVar

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
