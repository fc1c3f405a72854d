"""`run_experiment`: the light driver that runs an experiment's steps in DAG order, independent
ones concurrently, each on its executor; and `cancel`, which stops all a run started.

Each step is cached by its fingerprint (see fingerprint.py), resumes from what its directory
holds (finished trials, the tune step's study), and fails alone: only the steps that need it
are then skipped (blocked), the others finish.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from .._sys.files import atomic_write_json, atomic_write_text
from .._sys.procfs import ProcessRecord, boot_id, hostname, stop_records, wait_gone
from ..errors import BadConfig
from ..host.results import append_record
from ..sweeps import driver as sweep_driver
from ..sweeps.executors import EXECUTORS, sigterm_as_interrupt
from ..sweeps.slurm_jobs import scancel
from ..sweeps.sweepdir import SweepDir, read_json
from ..sweeps.trial import FAILED, TIMED_OUT
from .dag import downstream, upstream
from .expdir import ExperimentDir
from .fingerprint import fingerprint
from .kinds import STEP_KINDS
from .references import resolve
from .spec import COMMON_STEP_KEYS, ExperimentSpec, StepSpec, load_experiment
from .step import Params, StepContext


@dataclass
class StepResult:
    """How one step ended in this run: done (ran now), cached, failed, blocked or interrupted."""

    name: str
    state: str
    outputs: dict | None = None
    error: str | None = None
    executed: int = 0  # container trials run now
    seconds: float = 0.0


@dataclass
class ExperimentResult:
    """One run of an experiment: each step's result, in DAG order."""

    directory: Path
    run_id: str
    steps: dict[str, StepResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.state in ("done", "cached") for s in self.steps.values())

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.steps.items() if s.state == "failed"]

    @property
    def executed(self) -> int:
        """Container trials this run executed, over all steps (0 when all was cached)."""
        return sum(s.executed for s in self.steps.values())

    def __str__(self) -> str:
        lines = [f"experiment run {self.run_id} in {self.directory}: "
                 f"{'ok' if self.ok else 'FAILED'}, {self.executed} trial(s) executed"]
        for step in self.steps.values():
            line = f"  {step.name:<20} {step.state:<11} {step.executed:>4} trial(s) " \
                   f"{step.seconds:7.1f} s"
            if step.error:
                line += f"  {step.error.strip().splitlines()[0]}"
            lines.append(line)
        for name in self.failed:
            lines.append(f"step {name} failed: {self.steps[name].error}")
        return "\n".join(lines)


def run_experiment(
    spec_path: str | Path,
    *,
    executor: str | None = None,
    force: Iterable[str] = (),
    directory: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Run every step of an experiment whose outputs are not recorded for its fingerprint.

    Args:
        spec_path: the experiment's TOML spec.
        executor: "local" or "slurm" for every step instead of the spec's.
        force: steps to run again even when cached, with every step downstream of them.
        directory: where the experiment keeps its state (default: the spec's `dir`).
        progress: called with one line per event (a step starting, a tune trial, ...).

    Returns:
        An ExperimentResult: each step's state, outputs, error and trials executed (`ok` when
        every step is done or cached; `failed` names the failed steps).

    Raises:
        BadConfig: a bad spec, executor or forced step name, before anything runs.
        SweepAlreadyRunning: another driver works on this experiment directory.
        KeyboardInterrupt: Ctrl-C or SIGTERM (or `cancel`): running trials are stopped and Slurm
        jobs cancelled first; finished trials and steps stay, and the next run resumes.
    """
    spec = load_experiment(spec_path)
    if executor is not None:
        if executor not in EXECUTORS:
            raise BadConfig(f"executor {executor!r} is not known; use one of "
                            f"{', '.join(EXECUTORS)}")
        for step in spec.steps.values():
            step.executor = replace(step.executor, kind=executor)
    force = list(force)
    for name in force:
        if name not in spec.steps:
            raise BadConfig(f"--force {name}: the experiment has no step {name!r} (steps: "
                            f"{', '.join(spec.steps)})")
    layout = ExperimentDir(directory or spec.dir)
    layout.path.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: None)
    run_id = sweep_driver.new_run_id()
    with sweep_driver._exclusive(layout, "experiment"):
        atomic_write_text(layout.spec, spec.text)
        run = _Run(spec, layout, run_id, downstream(spec.needs, force), say)
        interrupted = False
        try:
            driver = {"run_id": run_id, "host": hostname(), "boot_id": boot_id(),
                      "pid": os.getpid(), "start": ProcessRecord.of(os.getpid()).start}
            atomic_write_json(layout.driver, driver)
            append_record(layout.runs, {"event": "start", "run_id": run_id, "time": time.time(),
                                        "host": hostname(), "pid": os.getpid(), "force": force})
            with sigterm_as_interrupt():
                run.all()
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted: trials stopped, Slurm jobs cancelled; run again to resume")
            raise
        finally:
            layout.driver.unlink(missing_ok=True)
            append_record(layout.runs, {"event": "end", "run_id": run_id, "time": time.time(),
                                        "interrupted": interrupted, "ok": run.result.ok,
                                        "failed": run.result.failed,
                                        "executed": run.result.executed})
    return run.result


def _forget_failed_trials(step_dir: Path, run_id: str) -> None:
    """Take back the outcomes of failed and timed-out trials of a failed step: a rerun retries them."""
    sweep = SweepDir(step_dir)
    sweep.forget([trial_id for trial_id, outcome in sweep.outcomes().items()
                  if outcome.status in (FAILED, TIMED_OUT)], run_id)


class _Run:
    """One run's scheduling: start each step once what it needs is complete."""

    def __init__(self, spec: ExperimentSpec, layout: ExperimentDir, run_id: str,
                 forced: set[str], say: Callable[[str], None]):
        self.spec, self.layout, self.run_id, self.forced, self.say = (spec, layout, run_id,
                                                                      forced, say)
        self.result = ExperimentResult(layout.path, run_id)
        self.cancel_event = threading.Event()
        self.jobs: list[str] = []
        self.outputs: dict[str, dict] = {}

    def all(self) -> None:
        for name in self.spec.steps:
            self.layout.step_dir(name).mkdir(parents=True, exist_ok=True)
        pending = list(self.spec.steps)
        running: dict[Future, str] = {}
        pool = ThreadPoolExecutor(max_workers=len(self.spec.steps), thread_name_prefix="step")
        try:
            while pending or running:
                for name in list(pending):
                    needs = self.spec.steps[name].needs
                    states = [self.result.steps[n].state if n in self.result.steps else None
                              for n in needs]
                    if any(s in ("failed", "blocked") for s in states):
                        pending.remove(name)
                        bad = [n for n, s in zip(needs, states, strict=True)
                               if s in ("failed", "blocked")]
                        self._record(StepResult(name, "blocked", error=f"not run: it needs "
                                                f"{', '.join(bad)}, which did not finish"))
                    elif all(s in ("done", "cached") for s in states):
                        pending.remove(name)
                        running[pool.submit(self.step, name)] = name
                if not running:
                    continue
                finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    self._record(future.result())
        except BaseException:
            self.cancel_event.set()
            scancel(self.jobs)
            for name in running.values():
                self.layout.set_state(name, state="interrupted", finished=time.time())
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            steps = self.result.steps  # reported in DAG order, not as they finished
            self.result.steps = {n: steps[n] for n in self.spec.steps if n in steps}

    def _record(self, result: StepResult) -> None:
        self.result.steps[result.name] = result
        if result.outputs is not None:
            self.outputs[result.name] = result.outputs
        if result.state == "blocked":
            self.layout.set_state(result.name, state="blocked", error=result.error,
                                  run_id=self.run_id)
        self.say(f"step {result.name}: {result.state}"
                 + (f" ({result.executed} trial(s), {result.seconds:.1f} s)"
                    if result.state == "done" else "")
                 + (f": {result.error.strip().splitlines()[0]}" if result.error else ""))

    def step(self, name: str) -> StepResult:
        """Run (or reuse) one step; its failure is its result, not an exception."""
        step = self.spec.steps[name]
        started = time.monotonic()
        context = None
        try:
            context, fp = self.prepare(step)
            recorded = self.layout.outputs(name)
            if name not in self.forced and recorded and recorded.get("fingerprint") == fp:
                self.layout.set_state(name, state="cached", fingerprint=fp, run_id=self.run_id,
                                      error=None)
                return StepResult(name, "cached", outputs=recorded["outputs"])
            state = self.layout.state(name)
            if name in self.forced or state.get("fingerprint") != fp or recorded:
                self.layout.reset_step(name)  # another attempt's files must not be resumed
            elif state.get("state") == "failed":
                _forget_failed_trials(self.layout.step_dir(name), self.run_id)  # run them again
            self.layout.set_state(name, state="running", fingerprint=fp, run_id=self.run_id,
                                  started=time.time(), error=None, pid=os.getpid())
            self.say(f"step {name}: running ({step.kind})")
            outputs = STEP_KINDS[step.kind].run(context)
            self.layout.write_outputs(name, {"fingerprint": fp, "outputs": outputs,
                                             "run_id": self.run_id, "finished": time.time()})
            self.layout.set_state(name, state="done", finished=time.time(),
                                  executed=context.executed[0])
            return StepResult(name, "done", outputs=outputs, executed=context.executed[0],
                              seconds=time.monotonic() - started)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.layout.set_state(name, state="failed", error=error, finished=time.time(),
                                  run_id=self.run_id)
            return StepResult(name, "failed", error=error,
                              executed=context.executed[0] if context else 0,
                              seconds=time.monotonic() - started)

    def prepare(self, step: StepSpec) -> tuple[StepContext, str]:
        """The step's resolved, checked parameters in a context, and its fingerprint."""
        kind = STEP_KINDS[step.kind]
        inputs = {n: self.outputs[n] for n in upstream(self.spec.needs, step.name)}
        table = {k: v for k, v in step.raw.items() if k not in COMMON_STEP_KEYS}
        resolved = resolve(table, inputs, step.key)
        base = self.spec.path.resolve().parent
        params = kind.check(Params(resolved, self.spec.path.name, step.key, base, resolved=True))
        images = kind.images(step, params, base) if kind.runs_containers else []
        fp = fingerprint(step.kind, params, images, step.runtime,
                         {n: inputs[n] for n in step.needs})
        context = StepContext(step=step, params=params, dir=self.layout.step_dir(step.name),
                              experiment=self.spec, run_id=self.run_id, inputs=inputs,
                              cancel_event=self.cancel_event, say=self.say,
                              on_job=self._on_job)
        return context, fp

    def _on_job(self, job_id: str) -> None:
        self.jobs.append(job_id)
        driver = self.layout.driver
        atomic_write_json(driver, {**(read_json(driver) or {}),
                                   "slurm_jobs": list(self.jobs)})
        self.say(f"submitted Slurm job {job_id}")


@dataclass
class CancelResult:
    """What `cancel` stopped."""

    directory: Path
    driver: str
    jobs_cancelled: list[str]
    processes_stopped: int

    def __str__(self) -> str:
        return (f"experiment {self.directory}: driver {self.driver}; "
                f"{len(self.jobs_cancelled)} Slurm job(s) cancelled; "
                f"{self.processes_stopped} trial process(es) stopped")


def cancel(experiment: str | Path, *, grace: float = 15.0) -> CancelResult:
    """Stop an experiment's run from outside: its driver (SIGINT, then SIGKILL after `grace`),
    its Slurm jobs, and every worker and server its steps left. Finished steps and trials stay;
    the next run resumes."""
    layout = experiment_dir(experiment)
    result = CancelResult(layout.path, "not running", [], 0)
    driver = read_json(layout.driver)
    if isinstance(driver, dict):
        result.jobs_cancelled = scancel([str(j) for j in driver.get("slurm_jobs", [])])
        record = ProcessRecord(int(driver["pid"]), int(driver["start"]))
        if (driver.get("host"), driver.get("boot_id")) != (hostname(), boot_id()):
            result.driver = f"runs on {driver.get('host')} (pid {record.pid}); run cancel there"
        elif record.alive():
            os.kill(record.pid, signal.SIGINT)
            if wait_gone([record], grace):
                result.driver = f"stopped (pid {record.pid})"
            else:
                stop_records([record], grace=5.0)
                result.driver = f"killed (pid {record.pid}; it did not stop on SIGINT)"
    for trials_index in sorted(layout.path.glob("steps/*/trials.json")):
        stopped = sweep_driver.cancel(trials_index.parent, grace=grace)
        result.jobs_cancelled += stopped.jobs_cancelled
        result.processes_stopped += stopped.processes_stopped
    return result


def experiment_dir(experiment: str | Path) -> ExperimentDir:
    """The directory of an experiment given as its spec file or as the directory itself."""
    path = Path(experiment)
    layout = ExperimentDir(load_experiment(path).dir) if path.is_file() else ExperimentDir(path)
    layout.check()
    return layout
