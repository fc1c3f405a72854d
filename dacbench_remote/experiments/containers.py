"""Container trials of a step, run on the step's executor: the sweeps' `Trial`s, executors and
per-trial files, with the step's directory as the sweep directory.

A trial that has its `done.json` is never run again (a resumed step repeats no finished trial);
`dacbench-remote sweep status STEP_DIR` works on a running step as on a sweep.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .._sys.files import atomic_write_text
from ..config import CONTAINER_RUNTIMES
from ..errors import BadConfig
from ..runtimes.rootfs import default_rootfs_cache, image_sha256
from ..sweeps.driver import make_executor
from ..sweeps.executors import RunContext
from ..sweeps.prefetch import fetch_image
from ..sweeps.slurm_jobs import live_tasks
from ..sweeps.sweepdir import SweepDir, read_jsonl
from ..sweeps.tables import to_csv
from ..sweeps.trial import DONE, Trial, TrialOutcome
from .step import StepContext

# Columns of a step's results.csv: the sweeps' episode columns, then the step's provenance.
RESULT_COLUMNS = [
    "experiment_name", "step", "run_id", "trial_id", "benchmark", "experiment", "config",
    "kwargs", "agent", "policy", "parameters", "seed", "episode", "episode_seed", "instance",
    "return", "length", "wall_time", "terminated", "truncated", "runtime", "image_sha256",
    "host",
]

_lock = threading.Lock()


def make_trial(step, *, benchmark: str, agent: str, seed: int, episodes: int,
               experiment: str | None = None, config: dict | None = None,
               kwargs: dict | None = None, test_set: bool = False,
               instances: list | tuple = ()) -> Trial:
    """A container trial of `step`, with its runtime, time limit and retries."""
    return Trial(benchmark=benchmark, agent=agent, seed=seed, episodes=episodes,
                 experiment=experiment, config=dict(config or {}), kwargs=dict(kwargs or {}),
                 time_limit=step.time_limit, runtime=step.runtime, retries=step.retries,
                 test_set=test_set, instances=tuple(instances))


def run_trials(ctx: StepContext, trials: list[Trial]) -> dict[str, TrialOutcome]:
    """Run those of `trials` that are not complete yet on the step's executor; return every
    trial's recorded outcome by id. Raises KeyboardInterrupt when the run was stopped."""
    layout = SweepDir(ctx.dir)
    layout.path.mkdir(parents=True, exist_ok=True)
    trials = list({t.id: t for t in trials}.values())  # two candidates alike: one trial dir
    _index(layout, trials)
    pending = [t for t in trials if layout.outcome(t.id) is None]
    if pending:
        ctx.check_cancelled()
        with _lock:
            ctx.executed[0] += len(pending)
        options = ctx.step.executor
        if options.kind == "slurm":
            _wait_for_earlier_arrays(layout, ctx)
        executor = make_executor(options.kind, options.local, options.slurm)
        run = RunContext(layout, ctx.run_id, ctx.label.replace(".", "-"), ctx.cancel_event,
                         lambda outcome: None, ctx.on_job)
        executor.run(pending, run)
    ctx.check_cancelled()
    outcomes = {t.id: layout.outcome(t.id) for t in trials}
    missing = [t for t in trials if outcomes[t.id] is None]
    if missing:  # ended without an outcome (a lost Slurm task without retries left)
        raise RuntimeError(f"{len(missing)} trial(s) of step {ctx.step.name} ended without an "
                           f"outcome (e.g. {missing[0].label()}); see {layout.trial_dir(missing[0].id)}")
    return outcomes


def _wait_for_earlier_arrays(layout: SweepDir, ctx: StepContext, timeout: float = 300.0) -> None:
    """The step's earlier arrays (a tune step's previous batch) must have left the queue: their
    tasks recorded their outcomes, but Slurm lists a task until it has completed, and the
    executor refuses to submit beside a live array of the same directory."""
    deadline = time.monotonic() + timeout
    for job_id in layout.job_ids():
        while live_tasks(job_id) and time.monotonic() < deadline:
            ctx.check_cancelled()
            time.sleep(0.5)


def _index(layout: SweepDir, trials: list[Trial]) -> None:
    """trials.json holds every trial the step has run so far (tune adds batches)."""
    try:
        known = {t.id: t for t in layout.trials()}
    except BadConfig:
        known = {}
    added = [t for t in trials if t.id not in known]
    if added or not layout.trials_index.exists():
        layout.write_trials([*known.values(), *added])


def episode_rows(ctx: StepContext, trial: Trial, outcome: TrialOutcome, **provenance) -> list[dict]:
    """A done trial's episode rows, each with the step's provenance (`policy`, `parameters`)."""
    if outcome is None or outcome.status != DONE:
        return []
    rows = sorted(read_jsonl(SweepDir(ctx.dir).trial_dir(trial.id) / "episodes.jsonl"),
                  key=lambda row: row.get("episode", 0))
    extra = {"experiment_name": ctx.experiment.name, "step": ctx.step.name,
             "run_id": outcome.run_id, **provenance}
    return [{**row, **extra} for row in rows]


def write_results(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, to_csv(rows, RESULT_COLUMNS))


def failures(outcomes: dict[str, TrialOutcome], trials: list[Trial]) -> list[str]:
    """One line per trial that did not end done: its label, status and first error line."""
    lines = []
    for trial in trials:
        outcome = outcomes[trial.id]
        if outcome.status != DONE:
            first = (outcome.error or "").strip().splitlines()[0] if outcome.error else ""
            lines.append(f"{trial.label()} [{outcome.status}]: {first}")
    return lines


def image_records(step, benchmarks: list[tuple[str, str | None]]) -> list[dict]:
    """The images the step's trials run (verified, fetched or built once, as a sweep does):
    part of its fingerprint."""
    runtime = step.runtime
    if runtime.kind not in CONTAINER_RUNTIMES:
        return [{"runtime": runtime.kind, "python": runtime.python}]
    if runtime.image is not None:
        return [{"image": runtime.image,
                 "sha256": image_sha256(Path(runtime.image), default_rootfs_cache())}]
    records = []
    for benchmark, experiment in sorted(set(benchmarks), key=str):
        _, provenance = fetch_image(benchmark, experiment)
        records.append({"benchmark": benchmark, "experiment": experiment,
                        "sha256": provenance.get("sha256")})
    return records


