"""`run_sweep` (spec → trials → executor → tables) and `cancel` (stop all a sweep started)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from secrets import token_hex

from .._sys.files import atomic_write_json, atomic_write_text, locked
from .._sys.procfs import ProcessRecord, boot_id, hostname, stop_records, wait_gone
from ..errors import BadConfig, SweepAlreadyRunning
from ..host.results import append_record
from .executors import EXECUTORS, Executor, RunContext, sigterm_as_interrupt
from .local_executor import LocalExecutor
from .slurm_executor import SlurmExecutor
from .slurm_jobs import live_tasks, scancel
from .spec import LocalOptions, SlurmOptions, load_spec
from .sweepdir import SweepDir, read_json
from .tables import import_parquet_writer_in_background, write_tables
from .trial import DONE, FAILED, TIMED_OUT, TrialOutcome
from .trial_runner import remove_server_sockets


@dataclass
class SweepResult:
    """One run of a sweep: what ran now (outcomes), what was already complete (skipped)."""

    sweep_dir: Path
    run_id: str
    executor: str
    total: int
    outcomes: list[TrialOutcome]
    skipped: list[str]
    job_ids: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes))

    @property
    def ok(self) -> bool:
        """True when every trial this run executed is done (none failed or timed out)."""
        return all(o.status == DONE for o in self.outcomes)

    def __str__(self) -> str:
        c = self.counts
        return (f"sweep run {self.run_id} ({self.executor}) in {self.sweep_dir}: "
                f"{len(self.outcomes)} trial(s) run, {len(self.skipped)} already complete; "
                f"{c.get(DONE, 0)} done, {c.get(FAILED, 0)} failed, "
                f"{c.get(TIMED_OUT, 0)} timed out, {c.get('cancelled', 0)} not finished")


def new_run_id() -> str:
    """Unique per run and sortable by start time: 20250101T120000Z-a1b2c3."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{token_hex(3)}"


def run_sweep(
    spec_path: str | Path,
    *,
    executor: str | None = None,
    workers: int | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    sweep_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every trial of a spec that is not complete yet, on the local or the slurm executor.

    Args:
        spec_path: the sweep.toml.
        executor: "local" or "slurm" instead of the spec's.
        workers: local executor: trials at a time (default: the spec's, else one per core).
        resume: False runs all trials again (their old results are removed).
        retry_failed: also run failed and timed-out trials again.
        sweep_dir: where results go (default: the spec's directory setting).
        progress: called with one line per finished trial.

    Returns:
        A SweepResult: this run's id and each trial's outcome (`ok` when all are done).

    Raises:
        BadConfig: a bad spec, executor or workers. SweepAlreadyRunning: another run (or Slurm
        job) works on this sweep directory. ImageError, RuntimeUnavailable: an image or runtime
        that cannot be had, before any trial starts. KeyboardInterrupt: Ctrl-C (or SIGTERM, or
        `cancel`) stops all trials and cancels Slurm jobs first; completed trials stay complete.
    """
    spec = load_spec(spec_path)
    kind = executor or spec.executor.kind
    if kind not in EXECUTORS:
        raise BadConfig(f"executor {kind!r} is not known; use one of {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise BadConfig(f"workers must be a positive integer, got {workers!r}")
    layout = SweepDir(sweep_dir or spec.dir)
    layout.path.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: None)

    with _exclusive(layout):
        run_id = new_run_id()
        atomic_write_text(layout.spec, spec.text)
        layout.write_trials(spec.trials)
        layout.compact_journal(run_id)
        _forget(layout, spec.trials, resume, retry_failed, run_id)
        recorded = layout.outcomes()
        pending = [t for t in spec.trials if t.id not in recorded]
        skipped = [t.id for t in spec.trials if t.id in recorded]
        result = SweepResult(layout.path, run_id, kind, len(spec.trials), [], skipped)
        append_record(layout.runs, {"event": "start", "run_id": run_id, "time": time.time(),
                                    "executor": kind, "host": hostname(), "pid": os.getpid(),
                                    "trials": len(spec.trials), "pending": len(pending),
                                    "skipped": len(skipped)})
        driver = {"run_id": run_id, "executor": kind, "host": hostname(), "boot_id": boot_id(),
                  "pid": os.getpid(), "start": ProcessRecord.of(os.getpid()).start}
        atomic_write_json(layout.driver, driver)
        say(f"sweep {spec.name}: run {run_id}, {len(pending)} trial(s) to run, "
            f"{len(skipped)} already complete, {kind} executor")

        labels = {t.id: t.label() for t in spec.trials}

        def on_outcome(outcome: TrialOutcome) -> None:
            result.outcomes.append(outcome)
            mean = "" if outcome.mean_return is None else f", mean return {outcome.mean_return:.4g}"
            error = f": {outcome.error.splitlines()[0]}" if outcome.error else ""
            say(f"[{len(result.outcomes)}/{len(pending)}] {outcome.trial_id} {outcome.status} "
                f"{labels.get(outcome.trial_id, '')}{mean}{error}")

        def on_job(job_id: str) -> None:
            result.job_ids.append(job_id)
            atomic_write_json(layout.driver, {**driver, "slurm_jobs": result.job_ids})
            say(f"submitted Slurm array job {job_id} ({len(pending)} trials)")

        ctx = RunContext(layout, run_id, spec.name, threading.Event(), on_outcome, on_job)
        runner = make_executor(kind, spec.executor.local, spec.executor.slurm, workers)
        interrupted = False
        try:
            with sigterm_as_interrupt():
                if pending:
                    import_parquet_writer_in_background()  # while the first servers start
                    runner.run(pending, ctx)
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted: trials stopped, Slurm jobs cancelled; run again to resume")
            raise
        finally:
            layout.driver.unlink(missing_ok=True)
            write_tables(layout, spec.trials)
            append_record(layout.runs, {"event": "end", "run_id": run_id, "time": time.time(),
                                        "interrupted": interrupted, **result.counts})
    return result


def make_executor(kind: str, local: LocalOptions, slurm: SlurmOptions,
                  workers: int | None = None) -> Executor:
    """The executor named `kind`, set up from the spec's `[executor.KIND]` table.

    `workers` overrides the local executor's worker count; the Slurm executor ignores it.
    """
    if kind == "local":
        return LocalExecutor(local, workers)
    if kind == "slurm":
        return SlurmExecutor(slurm)
    raise BadConfig(f"executor {kind!r} is not known; use one of {', '.join(EXECUTORS)}")


def _forget(layout: SweepDir, trials, resume: bool, retry_failed: bool, run_id: str) -> None:
    """Take back the recorded outcomes that this run must redo (durably, before it starts)."""
    if not resume:
        layout.forget([trial.id for trial in trials], run_id)
        for trial in trials:
            shutil.rmtree(layout.trial_dir(trial.id), ignore_errors=True)
    elif retry_failed:
        recorded = layout.outcomes()
        layout.forget([t.id for t in trials if t.id in recorded
                       and recorded[t.id].status in (FAILED, TIMED_OUT)], run_id)


@contextmanager
def _exclusive(layout, what: str = "sweep") -> Iterator[None]:
    """One driver per sweep (or experiment: `what`) directory at a time (the lock dies with
    the process); `layout` has the directory's `path`, `lock` and `driver` file."""
    with locked(layout.lock, blocking=False) as free:
        if not free:
            other = read_json(layout.driver) or {}
            raise SweepAlreadyRunning(
                f"{what} directory {layout.path} is in use by another run (pid "
                f"{other.get('pid', '?')} on {other.get('host', '?')}); wait for it, or stop it "
                f"with `dacbench-remote {what} cancel {layout.path}`"
            )
        yield


@dataclass
class CancelResult:
    """What `cancel` stopped."""

    sweep_dir: Path
    driver: str
    jobs_cancelled: list[str]
    processes_stopped: int
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"sweep {self.sweep_dir}: driver {self.driver}; "
                 f"{len(self.jobs_cancelled)} Slurm job(s) cancelled"
                 f"{' (' + ', '.join(self.jobs_cancelled) + ')' if self.jobs_cancelled else ''}; "
                 f"{self.processes_stopped} trial process(es) stopped"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def cancel(sweep_dir: str | Path, *, grace: float = 15.0) -> CancelResult:
    """Stop a sweep from outside: its driver, its Slurm jobs, and every worker and server it left.

    Completed trials stay complete; stopped ones run again when the sweep is resumed.
    """
    layout = SweepDir(sweep_dir)
    layout.trials()  # fails clearly if this is not a sweep directory
    result = CancelResult(layout.path, "not running", [], 0)
    here = (hostname(), boot_id())
    # Jobs first: a driver that is told to stop would otherwise wait for them.
    jobs = [j for j in layout.job_ids() if live_tasks(j)]
    result.jobs_cancelled = scancel(jobs)
    driver = read_json(layout.driver)
    if isinstance(driver, dict):
        record = ProcessRecord(int(driver["pid"]), int(driver["start"]))
        if (driver.get("host"), driver.get("boot_id")) != here:
            result.driver = f"runs on {driver.get('host')} (pid {record.pid})"
            result.notes.append(f"the driver runs on host {driver.get('host')}; its Slurm jobs "
                                "were cancelled here, run cancel there to stop it")
        elif record.alive():
            # The driver cleans up on SIGINT like on Ctrl-C; force it only if it does not.
            os.kill(record.pid, signal.SIGINT)
            if wait_gone([record], grace):
                result.driver = f"stopped (pid {record.pid})"
            else:
                stop_records([record], grace=5.0)
                result.driver = f"killed (pid {record.pid}; it did not stop on SIGINT)"
    # Tasks get SIGTERM from Slurm and clean up; sweep up after those that could not.
    deadline = time.monotonic() + grace
    while jobs and time.monotonic() < deadline and any(live_tasks(j) for j in jobs):
        time.sleep(0.5)
    for running in sorted(layout.path.glob("trials/*/running.json")):
        data = read_json(running)
        if not isinstance(data, dict) or (data.get("host"), data.get("boot_id")) != here:
            continue
        records = [ProcessRecord.from_dict(p) for p in data.get("processes", [])]
        alive = [r for r in records if r.alive()]
        stop_records(alive, grace=5.0)
        remove_server_sockets(data.get("sockets", []))
        result.processes_stopped += len(alive)
        running.unlink(missing_ok=True)
    return result
