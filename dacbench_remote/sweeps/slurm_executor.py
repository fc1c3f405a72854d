"""The Slurm executor: one array job submitted through submitit, each array task running a chunk
of trials in one warm container (as the local executor does, one trial at a time), and what a
driver needs from Slurm (`live_tasks`, `scancel`) to watch and cancel the jobs.

A task records each finished trial in its own journal file (sweeps/journal.py); the driver tails
the journals and reports a trial once its task committed it. A task that ends early (scancel,
its time limit, a dead node) costs only the trials it had not finished: they are submitted again
while they have retries left, else they run again when the sweep is resumed.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..errors import RuntimeUnavailable, SweepAlreadyRunning
from .executors import Executor, RunContext, sigterm_as_interrupt
from .journal import JournalIndex
from .local_executor import LocalExecutor
from .prefetch import prefetch_images
from .slurm_jobs import live_tasks, scancel
from .spec import LocalOptions, SlurmOptions
from .sweepdir import SweepDir
from .trial import CANCELLED, DONE, Trial, TrialOutcome
from .trial_runner import record_retry, recorded_retries

CACHE_ENV = "DACBENCH_REMOTE_CACHE"
DEFAULT_TRIAL_TIME = 60.0  # seconds a trial is expected to take when nothing says otherwise


def slurm_chunk(trials: list[dict], sweep_dir: str, run_id: str, sweep_name: str,
                warm: bool = True) -> dict[str, int]:
    """What one array task runs on a node (module-level so that submitit can pickle it): its
    trials one after another, each in its own worker and server, forked from one warm zygote
    and worker host (`warm`); SIGTERM (scancel, the time limit) stops the running trial and
    commits the finished ones. Returns how many trials ended in each state."""
    role = "task" + os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", ""))
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        role += "_" + os.environ["SLURM_ARRAY_TASK_ID"]
    ctx = RunContext(SweepDir(sweep_dir), run_id, sweep_name, threading.Event(),
                     lambda outcome: None)
    executor = LocalExecutor(LocalOptions(workers=1, warm=warm), role=role)
    with sigterm_as_interrupt():
        outcomes = executor.run([Trial.from_dict(t) for t in trials], ctx)
    return dict(Counter(o.status for o in outcomes))


def expected_trial_time(layout: SweepDir, options: SlurmOptions) -> float:
    """Seconds one trial is expected to take: the spec's `trial_time`, else the median time of
    the sweep's finished trials, else DEFAULT_TRIAL_TIME."""
    if options.trial_time is not None:
        return options.trial_time
    times = [o.wall_time for o in layout.outcomes().values() if o.status == DONE]
    return statistics.median(times) if times else DEFAULT_TRIAL_TIME


def plan_chunks(trials: list[Trial], options: SlurmOptions, trial_time: float
                ) -> list[list[Trial]]:
    """The array tasks' trials: `trials_per_task` each, or as many as fill `task_length` at
    `trial_time` each; no fewer tasks than `array_parallelism` allows to run at once."""
    per_task = options.trials_per_task
    if per_task is None:
        per_task = max(1, int(options.task_length // max(trial_time, 1e-3)))
        if options.array_parallelism:
            per_task = min(per_task, math.ceil(len(trials) / options.array_parallelism))
    return [trials[i:i + per_task] for i in range(0, len(trials), per_task)]


class SlurmExecutor(Executor):
    """Submits one array job (a chunk of trials per task) with submitit and waits for the
    outcomes."""

    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None):
        self.options = options or SlurmOptions()

    def parameters(self, trials: list, sweep_name: str, *, per_task: int = 1,
                   trial_time: float = 0.0) -> dict:
        """submitit's AutoExecutor parameters for the array job of `trials` (anything with a
        `time_limit`), `per_task` of them in each task, each expected to take `trial_time`."""
        o = self.options
        longest = max(t.time_limit for t in trials)
        budget = longest + 1.5 * trial_time * (min(per_task, len(trials)) - 1)
        params: dict = {
            "name": f"dacbr-{sweep_name}",
            "timeout_min": o.time or int(budget // 60) + 5,
            "cpus_per_task": o.cpus_per_task,
            "slurm_array_parallelism": o.array_parallelism or math.ceil(len(trials) / per_task),
        }
        optional = {"slurm_partition": o.partition, "mem_gb": o.mem_gb, "slurm_gres": o.gres,
                    "slurm_account": o.account, "slurm_qos": o.qos,
                    "slurm_constraint": o.constraint}
        params.update({k: v for k, v in optional.items() if v is not None})
        if o.setup:
            params["slurm_setup"] = list(o.setup)
        if o.additional:
            params["slurm_additional_parameters"] = dict(o.additional)
        return params

    def run(self, trials: list[Trial], ctx: RunContext) -> list[TrialOutcome]:
        try:
            import submitit
        except ImportError as exc:
            raise RuntimeUnavailable(
                "the slurm executor needs submitit: pip install 'dacbench-remote[slurm]'"
            ) from exc
        for tool in ("sbatch", "squeue", "scancel"):
            if shutil.which(tool) is None:
                raise RuntimeUnavailable(f"the slurm executor needs {tool} on PATH (run the "
                                         "sweep on a Slurm login node)")
        self._refuse_if_running(ctx.layout)
        with _cache_dir(self.options.cache_dir):
            trials = prefetch_images(trials)
        trial_time = expected_trial_time(ctx.layout, self.options)
        outcomes: list[TrialOutcome] = []
        while trials:
            chunks = plan_chunks(trials, self.options, trial_time)
            with _cache_dir(self.options.cache_dir):
                folder = Path(self.options.folder or ctx.layout.slurm_folder)
                executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
                executor.update_parameters(**self.parameters(
                    trials, ctx.sweep_name, per_task=len(chunks[0]), trial_time=trial_time))
                jobs = executor.map_array(
                    slurm_chunk, [[t.to_dict() for t in chunk] for chunk in chunks],
                    [str(ctx.layout.path)] * len(chunks), [ctx.run_id] * len(chunks),
                    [ctx.sweep_name] * len(chunks), [self.options.warm] * len(chunks))
            array_id = jobs[0].job_id.split("_")[0]
            ctx.layout.add_job_id(array_id)
            ctx.on_job(array_id)
            try:
                done, lost = self._wait(chunks, jobs, array_id, ctx)
            except BaseException:
                ctx.cancel_event.set()
                scancel([array_id])
                _wait_until_gone(array_id, timeout=60.0)
                raise
            outcomes += done
            trials = self._retry_lost(lost, ctx)
        return outcomes

    def _retry_lost(self, lost: list[tuple[Trial, TrialOutcome]],
                    ctx: RunContext) -> list[Trial]:
        """Trials whose task ended before recording them (its node died, say), to submit again
        while they have retries left (each recorded); the others are reported as such."""
        again = []
        for trial, outcome in lost:
            trial_dir = ctx.layout.trial_dir(trial.id)
            if len(recorded_retries(trial_dir, ctx.run_id)) < trial.retries:
                trial_dir.mkdir(parents=True, exist_ok=True)
                record_retry(trial_dir, outcome)
                again.append(trial)
            else:
                ctx.on_outcome(outcome)
        return again

    def _refuse_if_running(self, layout: SweepDir) -> None:
        """Two arrays working on the same trial directories would corrupt each other."""
        for job_id in layout.job_ids():
            tasks = live_tasks(job_id)
            if tasks:
                raise SweepAlreadyRunning(
                    f"Slurm job {job_id} of an earlier run of this sweep still has {len(tasks)} "
                    f"task(s) queued or running; wait for it, or cancel it with "
                    f"`dacbench-remote sweep cancel {layout.path}`"
                )

    def _wait(self, chunks: list[list[Trial]], jobs: list, array_id: str, ctx: RunContext
              ) -> tuple[list[TrialOutcome], list[tuple[Trial, TrialOutcome]]]:
        """Collect the outcomes the tasks commit to their journals (passed on as they come);
        `jobs[i]` is the submitit job of `chunks[i]`. Returns them, and the trials whose tasks
        ended without committing one, each with the outcome that says so (not passed on)."""
        job_of = {t.id: job for chunk, job in zip(chunks, jobs, strict=True) for t in chunk}
        by_id = {t.id: t for chunk in chunks for t in chunk}
        remaining = set(job_of)
        index = JournalIndex(ctx.layout.journal_dir)
        outcomes: list[TrialOutcome] = []
        lost: list[tuple[Trial, TrialOutcome]] = []
        next_check = time.monotonic() + 5.0
        job_gone_since: float | None = None
        while remaining:
            for record in index.refresh():  # only what a task's fsync made durable
                outcome = record.outcome
                if outcome.trial_id in remaining and outcome.run_id == ctx.run_id:
                    remaining.discard(outcome.trial_id)
                    outcomes.append(outcome)
                    ctx.on_outcome(outcome)
            if not remaining:
                break
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 5.0
                tasks = live_tasks(array_id)
                if tasks == [] and job_gone_since is None:
                    job_gone_since = now
                # Outcomes are written before a task ends; allow a shared filesystem to catch up.
                if job_gone_since is not None and now - job_gone_since > 10.0:
                    for trial_id in [t for t in job_of if t in remaining]:  # in spec order
                        job = job_of[trial_id]
                        # submitit's JobPaths name the task's log (the folder may hold %j, %A).
                        outcome = TrialOutcome(trial_id, CANCELLED, ctx.run_id, error=(
                            f"Slurm task {job.job_id} ended without recording an outcome; "
                            f"see {job.paths.stderr}"))
                        lost.append((by_id[trial_id], outcome))
                    break
            time.sleep(self.options.poll_interval)
        return outcomes, lost


def _wait_until_gone(job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live_tasks(job_id) in ([], None):
            return
        time.sleep(0.5)


@contextlib.contextmanager
def _cache_dir(cache_dir: str | None) -> Iterator[None]:
    """Point the image cache (here and in jobs, which inherit the environment) at `cache_dir`."""
    if cache_dir is None:
        yield
        return
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = cache_dir
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = old
