"""The local executor: `workers` trials at a time on this machine, each in its own worker process
(forked from a warm worker host unless `warm = false`) with its own server.

Finished trials go into this run's journal (sweeps/journal.py); the executor commits them in
groups from its main thread and reports each (`ctx.on_outcome`) once its commit is durable.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from .executors import Executor, RunContext
from .journal import JournalWriter, TrialRecord, writer_name
from .prefetch import prefetch_images
from .spec import LocalOptions
from .trial import CANCELLED, FAILED, Trial, TrialOutcome
from .trial_runner import run_trial
from .warm import WarmSlots, makes_same_env

# The longest the main thread waits for a trial before it looks again (Ctrl-C, commits).
POLL = 0.5


class LocalExecutor(Executor):
    """Runs `workers` trials at a time here; each trial is its own worker process and server.

    `role` names this executor's journal file among others of the same run (a Slurm task's).
    """

    name = "local"

    def __init__(self, options: LocalOptions | None = None, workers: int | None = None, *,
                 role: str = "local"):
        configured = options.workers if options else None
        self.workers = workers or configured or os.cpu_count() or 1
        self.warm = options.warm if options else True
        self.role = role

    def run(self, trials: list[Trial], ctx: RunContext) -> list[TrialOutcome]:
        trials = prefetch_images(trials)
        by_id = {trial.id: trial for trial in trials}
        position = {trial.id: index for index, trial in enumerate(trials)}

        def make_ahead(trial: Trial) -> bool:
            """Whether the slot running `trial` runs one with the same env next: trials start
            in order, so it does when the next `workers` trials all make that env."""
            following = trials[position[trial.id] + 1:][:self.workers]
            return (len(following) == self.workers
                    and all(makes_same_env(trial, other) for other in following))

        outcomes: list[TrialOutcome] = []
        slots = WarmSlots(self.warm)
        journal = JournalWriter(ctx.layout.journal_dir, writer_name(ctx.run_id, self.role))

        def run_one(trial: Trial) -> TrialOutcome:
            zygote = None
            if not ctx.cancel_event.is_set():  # about to stop: no zygote to start
                host = slots.worker_host()
                if host is not None:
                    host.start()  # imports while the zygote starts
                zygote = slots.socket_for(trial)
            socket_path, pid = zygote or (None, None)
            return run_trial(trial, ctx.layout.path, run_id=ctx.run_id,
                             sweep_name=ctx.sweep_name, cancel_event=ctx.cancel_event,
                             zygote=socket_path, zygote_pid=pid,
                             worker_host=slots.worker_host(), journal=journal,
                             make_ahead=self.warm and make_ahead(trial))

        def report(records: list[TrialRecord]) -> None:
            for record in records:
                ctx.layout.write_done(record, by_id.get(record.outcome.trial_id))
                outcomes.append(record.outcome)
                ctx.on_outcome(record.outcome)

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="trial")
        try:
            futures = {pool.submit(run_one, trial): trial for trial in trials}
            pending = set(futures)
            while pending:
                # A timeout keeps the main thread responsive to Ctrl-C and to due commits.
                due = journal.seconds_until_due()
                timeout = POLL if due is None else min(POLL, due)
                finished, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome, recorded = _outcome_of(future, futures[future], ctx.run_id)
                    if not recorded:  # in no journal: reported now (it runs again on resume)
                        outcomes.append(outcome)
                        ctx.on_outcome(outcome)
                if journal.due():
                    report(journal.commit())
        except BaseException:
            # Running trials see the event, stop their workers and servers, and return.
            ctx.cancel_event.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            slots.close()
            report(journal.close())  # what finished is made durable and reported, even on Ctrl-C
        return outcomes


def _outcome_of(future, trial: Trial, run_id: str) -> tuple[TrialOutcome, bool]:
    """The trial's outcome and whether it went into the journal; a crash of the supervisor
    itself becomes an (unrecorded) failure."""
    exc = future.exception()
    if exc is None:
        outcome = future.result()
        return outcome, outcome.status != CANCELLED
    return TrialOutcome(trial.id, FAILED, run_id, error=f"the trial supervisor failed: "
                                                        f"{type(exc).__name__}: {exc}"), False
