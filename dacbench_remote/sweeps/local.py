"""Executors: where trials run. Both call the same `run_trial`; they differ only in who calls it.

`local`: N trials at a time on this machine, each in its own worker process and server.
`slurm`: one Slurm array job through submitit, one trial per array task.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import DacbenchRemoteError, RuntimeUnavailable
from .spec import LocalOptions, SlurmOptions
from .sweepdir import SweepDir
from .trial import CANCELLED, FAILED, Trial, TrialOutcome
from .trial_runner import run_trial
from .warm import WarmSlots

CACHE_ENV = "DACBENCH_REMOTE_CACHE"
CONTAINER_RUNTIMES = ("bwrap", "apptainer", "auto")  # "auto" is always a container


@dataclass
class RunContext:
    """What every executor needs to know about the sweep run it serves."""

    layout: SweepDir
    run_id: str
    sweep_name: str
    cancel_event: threading.Event
    on_outcome: Callable[[TrialOutcome], None]
    on_job: Callable[[str], None] = lambda job_id: None


# -- images ----------------------------------------------------------------------------------


def fetch_image(benchmark: str, experiment: str | None) -> tuple[str, dict]:
    """The one place sweeps touch the image cache: resolve, fetch and verify once.

    Like RemoteRunner, it builds the image from its packaged recipe when it can be neither
    found in the cache nor downloaded. Returns the image path and its provenance (sha256,
    experiment id, origin) for the results.
    """
    from ..images.resolve import resolve_image

    path, provenance = resolve_image(benchmark, experiment, build=True)
    return str(path), provenance


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


Fetch = Callable[[str, "str | None"], "tuple[str, dict]"]


def prefetch_images(trials: list[Trial], fetch: Fetch | None = None) -> list[Trial]:
    """Fetch each image the trials need once, before any trial starts; pin trials to the files.

    An image that cannot be had stops the sweep here, before any trial starts.
    """
    from ..images.download import sha256_file

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
            # A given image is hashed once here, for the results, instead of once per trial.
            if runtime.image not in hashed:
                try:
                    hashed[runtime.image] = sha256_file(Path(runtime.image))
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


# -- local -----------------------------------------------------------------------------------


class LocalExecutor:
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


# -- slurm -----------------------------------------------------------------------------------


def slurm_task(trial: dict, sweep_dir: str, run_id: str, sweep_name: str) -> TrialOutcome:
    """What one array task runs on a node (module-level so that submitit can pickle it)."""
    return run_trial(trial, sweep_dir, run_id=run_id, sweep_name=sweep_name)


def live_tasks(job_id: str) -> list[str] | None:
    """Array tasks of `job_id` still queued or running; None when Slurm cannot be asked."""
    try:
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # A job that finished and was purged from slurmctld's memory.
        return [] if "invalid job id" in proc.stderr.lower() else None
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def scancel(job_ids: list[str]) -> list[str]:
    """Cancel Slurm jobs (whole arrays); returns the ids scancel accepted."""
    if not job_ids or shutil.which("scancel") is None:
        return []
    proc = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
    if proc.returncode == 0:
        return list(job_ids)
    return [j for j in job_ids if j not in proc.stderr]


class SlurmExecutor:
    """Submits one array job (one trial per task) with submitit and waits for the outcomes."""

    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None):
        self.options = options or SlurmOptions()

    def parameters(self, trials: list[Trial], sweep_name: str) -> dict:
        """submitit's AutoExecutor parameters for the array job."""
        o = self.options
        longest = max(t.time_limit for t in trials)
        params: dict = {
            "name": f"dacbr-{sweep_name}",
            "timeout_min": o.time or int(longest // 60) + 5,
            "cpus_per_task": o.cpus_per_task,
            "slurm_array_parallelism": o.array_parallelism or len(trials),
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
            folder = Path(self.options.folder or ctx.layout.slurm_folder)
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            executor.update_parameters(**self.parameters(trials, ctx.sweep_name))
            jobs = executor.map_array(
                slurm_task, [t.to_dict() for t in trials], [str(ctx.layout.path)] * len(trials),
                [ctx.run_id] * len(trials), [ctx.sweep_name] * len(trials))
        array_id = jobs[0].job_id.split("_")[0]
        ctx.layout.add_job_id(array_id)
        ctx.on_job(array_id)
        try:
            return self._wait(trials, array_id, ctx, folder)
        except BaseException:
            ctx.cancel_event.set()
            scancel([array_id])
            _wait_until_gone(array_id, timeout=60.0)
            raise

    def _refuse_if_running(self, layout: SweepDir) -> None:
        """Two arrays working on the same trial directories would corrupt each other."""
        for job_id in layout.job_ids():
            tasks = live_tasks(job_id)
            if tasks:
                raise DacbenchRemoteError(
                    f"Slurm job {job_id} of an earlier run of this sweep still has {len(tasks)} "
                    f"task(s) queued or running; wait for it, or cancel it with "
                    f"`dacbench-remote sweep cancel {layout.path}`"
                )

    def _wait(self, trials: list[Trial], array_id: str, ctx: RunContext,
              folder: Path) -> list[TrialOutcome]:
        remaining = {t.id: i for i, t in enumerate(trials)}
        outcomes: list[TrialOutcome] = []
        next_check = time.monotonic() + 5.0
        job_gone_since: float | None = None
        while remaining:
            for trial_id in list(remaining):
                outcome = ctx.layout.outcome(trial_id)
                if outcome is not None:
                    del remaining[trial_id]
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
                    for trial_id, index in remaining.items():
                        outcome = TrialOutcome(trial_id, CANCELLED, ctx.run_id, error=(
                            f"Slurm task {array_id}_{index} ended without recording an outcome; "
                            f"see {_task_log(folder, array_id, index)}"))
                        outcomes.append(outcome)
                        ctx.on_outcome(outcome)
                    break
            time.sleep(self.options.poll_interval)
        return outcomes


def _task_log(folder: Path, array_id: str, index: int) -> Path:
    return folder / f"{array_id}_{index}_0_log.err"


def _wait_until_gone(job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live_tasks(job_id) in ([], None):
            return
        time.sleep(0.5)


def make_executor(kind: str, local: LocalOptions, slurm: SlurmOptions,
                  workers: int | None = None) -> LocalExecutor | SlurmExecutor:
    if kind == "slurm":
        return SlurmExecutor(slurm)
    return LocalExecutor(local, workers)

