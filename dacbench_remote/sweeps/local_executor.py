"""The local executor: `workers` trials at a time on this machine, each in its own worker process
(forked from a warm worker host unless `warm = false`) with its own server."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from .executors import Executor, RunContext, prefetch_images
from .spec import LocalOptions
from .trial import FAILED, Trial, TrialOutcome
from .trial_runner import run_trial
from .warm import WarmSlots


class LocalExecutor(Executor):
    """Runs `workers` trials at a time here; each trial is its own worker process and server."""

    name = "local"

    def __init__(self, options: LocalOptions | None = None, workers: int | None = None):
        configured = options.workers if options else None
        self.workers = workers or configured or os.cpu_count() or 1
        self.warm = options.warm if options else True

    def run(self, trials: list[Trial], ctx: RunContext) -> list[TrialOutcome]:
        trials = prefetch_images(trials)
        outcomes: list[TrialOutcome] = []
        slots = WarmSlots(self.warm)

        def run_one(trial: Trial) -> TrialOutcome:
            if ctx.layout.outcome(trial.id) is not None or ctx.cancel_event.is_set():
                zygote = None  # recorded already, or about to stop: no zygote to start
            else:
                host = slots.worker_host()
                if host is not None:
                    host.start()  # imports while the zygote starts
                zygote = slots.socket_for(trial)
            socket_path, pid = zygote or (None, None)
            return run_trial(trial, ctx.layout.path, run_id=ctx.run_id,
                             sweep_name=ctx.sweep_name, cancel_event=ctx.cancel_event,
                             zygote=socket_path, zygote_pid=pid,
                             worker_host=slots.worker_host())

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="trial")
        try:
            futures = {pool.submit(run_one, trial): trial for trial in trials}
            pending = set(futures)
            while pending:
                # A timeout keeps the main thread responsive to Ctrl-C.
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = _outcome_of(future, futures[future], ctx.run_id)
                    outcomes.append(outcome)
                    ctx.on_outcome(outcome)
        except BaseException:
            # Running trials see the event, stop their workers and servers, and return.
            ctx.cancel_event.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            slots.close()
        return outcomes


def _outcome_of(future, trial: Trial, run_id: str) -> TrialOutcome:
    """The trial's outcome; a crash of the supervisor itself becomes an (unrecorded) failure."""
    exc = future.exception()
    if exc is None:
        return future.result()
    return TrialOutcome(trial.id, FAILED, run_id, error=f"the trial supervisor failed: "
                                                         f"{type(exc).__name__}: {exc}")
