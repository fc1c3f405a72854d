"""Sweeps through a real one-node Slurm (scripts/slurm-cluster.sh): same results as local, cancel."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from dacbench_remote._sys.procfs import ProcessRecord, wait_gone
from dacbench_remote.sweeps import SweepDir, cancel, load_spec, read_results_csv, run_sweep
from dacbench_remote.sweeps.slurm_executor import live_tasks
from tests.conftest import IMAGE_TIMEOUT
from tests.integration.runtime_images import build_standin_image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HELPERS = "tests.integration.sweep_helpers"


@pytest.fixture
def sweep_env(monkeypatch) -> dict[str, str]:
    """Array tasks inherit the submitting environment: helpers importable, a private socket dir."""
    sockets = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))  # short: AF_UNIX path limit
    values = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DACBENCH_REMOTE_SOCKET_DIR": str(sockets),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield values
    leftovers = sorted(p.name for p in sockets.iterdir())
    shutil.rmtree(sockets, ignore_errors=True)
    assert leftovers == [], f"sockets left behind: {leftovers}"


@pytest.fixture(params=["bwrap", "local"])
def runtime_table(request) -> str:
    """The [runtime] table: bwrap with a real image (as the issue demands), and plain local."""
    if request.param == "local":
        return 'kind = "local"'
    from dacbench_remote.runtimes.bwrap import bwrap_problem

    problem = bwrap_problem()
    assert problem is None, f"bwrap cannot run containers here: {problem}"
    try:
        image = request.getfixturevalue("base_image")
    except pytest.FixtureLookupError:
        # Until the shared base_image fixture lands: the test image, which runs the real server.
        image = build_standin_image()
    return f'kind = "bwrap"\nimage = "{image}"'


@pytest.mark.timeout(IMAGE_TIMEOUT)  # runtime_table may build the base image
def test_slurm_array_gives_the_same_trials_and_returns_as_the_local_executor(
        tmp_path: Path, slurm_cluster, sweep_env, runtime_table: str):
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(textwrap.dedent("""
        name = "same-results"
        episodes = 3
        time_limit = 120
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["random", "static"]
        seeds = [0, 1, 2, 3]
        [executor.slurm]
        time = 10
        array_parallelism = 4
        trials_per_task = 3
        [runtime]
    """) + runtime_table + "\n")
    spec = load_spec(spec_path)
    assert len(spec.trials) == 8

    on_slurm = run_sweep(spec_path, executor="slurm", sweep_dir=tmp_path / "slurm")
    on_local = run_sweep(spec_path, executor="local", sweep_dir=tmp_path / "local")

    ids = {t.id for t in spec.trials}
    assert {o.trial_id for o in on_slurm.outcomes} == ids == {o.trial_id for o in on_local.outcomes}
    assert {o.status for o in on_slurm.outcomes} == {"done"}, [o.error for o in on_slurm.outcomes]
    assert {o.status for o in on_local.outcomes} == {"done"}
    [array_id] = on_slurm.job_ids
    assert SweepDir(tmp_path / "slurm").job_ids() == [array_id]
    # One array job, three trials per task (each task one warm container), throttled as the
    # spec says; each task recorded its trials in its own journal file.
    [script] = (tmp_path / "slurm" / "slurm").glob("*_submission.sh")
    assert "#SBATCH --array=0-2%3" in script.read_text()  # submitit caps it at the tasks
    journals = sorted(p.name for p in (tmp_path / "slurm" / "journal").glob("*.jsonl"))
    assert sorted(re.search(r"-(task\d+_\d+)-", n).group(1) for n in journals) == sorted(
        f"task{array_id}_{i}" for i in range(3)), journals

    def episodes(directory: Path) -> dict[tuple[str, int], tuple[float, int]]:
        rows = read_results_csv(directory / "results.csv")
        return {(r["trial_id"], r["episode"]): (r["return"], r["length"]) for r in rows}

    slurm_rows, local_rows = episodes(tmp_path / "slurm"), episodes(tmp_path / "local")
    assert len(slurm_rows) == 8 * 3
    assert slurm_rows == local_rows  # same trial ids, identical returns and lengths
    runtimes = {r["runtime"] for r in read_results_csv(tmp_path / "slurm" / "results.csv")}
    assert runtimes == {"bwrap" if "bwrap" in runtime_table else "local"}


@pytest.mark.parametrize("agents", [1, 2], ids=["one-job", "array"])
def test_a_task_that_ends_without_an_outcome_names_its_log(tmp_path: Path, slurm_cluster,
                                                           sweep_env, agents: int):
    """submitit submits one trial as a plain job and more as an array: the log is named by
    submitit's paths of the job either way."""
    names = [f"{HELPERS}:supervisor_killing_agent", "random"][:agents]
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(textwrap.dedent(f"""
        name = "lost-task"
        time_limit = 120
        [executor.slurm]
        trials_per_task = 1
        [runtime]
        kind = "local"
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = {names!r}
        seeds = [0]
    """).replace("'", '"'))
    spec = load_spec(spec_path)
    result = run_sweep(spec_path, executor="slurm")
    [job_id] = result.job_ids
    by_id = {o.trial_id: o for o in result.outcomes}
    killed, *others = spec.trials
    assert [by_id[t.id].status for t in others] == ["done"] * len(others)
    lost = by_id[killed.id]
    assert lost.status == "cancelled"
    found = re.fullmatch(r"Slurm task (\S+) ended without recording an outcome; see (\S+)",
                         lost.error)
    assert found, lost.error
    assert found.group(1) == (job_id if agents == 1 else f"{job_id}_0")
    log = Path(found.group(2))  # submitit's name for the task's stderr, as Slurm wrote it
    assert log.parent == SweepDir(spec.dir).slurm_folder and log.is_file(), log


def test_cancel_scancels_the_array_and_stops_its_servers(tmp_path: Path, slurm_cluster,
                                                         sweep_env):
    pidfiles = [tmp_path / f"server-{i}.pid" for i in range(2)]
    trials = "".join(f"""
        [[trials]]
        benchmark = "{HELPERS}:make_stuck_env"
        kwargs = {{ pidfile = "{pidfile}" }}
        agent = "random"
        seed = {i}
    """ for i, pidfile in enumerate(pidfiles))
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(textwrap.dedent("""
        name = "cancel-on-slurm"
        time_limit = 600
        [executor.slurm]
        trials_per_task = 1
        [runtime]
        kind = "local"
    """ + trials))
    layout = SweepDir(load_spec(spec_path).dir)
    code = ("import sys; from dacbench_remote.sweeps import run_sweep; "
            "run_sweep(sys.argv[1], executor='slurm')")
    driver = subprocess.Popen([sys.executable, "-c", code, str(spec_path)], cwd=REPO,
                              env={**os.environ, **sweep_env}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not all(p.exists() for p in pidfiles):
            assert time.monotonic() < deadline, "the array tasks did not start their servers"
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.2)
        servers = [ProcessRecord.of(int(p.read_text())) for p in pidfiles]
        [array_id] = layout.job_ids()
        assert len(live_tasks(array_id)) == 2

        result = cancel(layout.path)

        assert result.jobs_cancelled == [array_id], str(result)
        assert result.driver.startswith("stopped"), str(result)
        assert driver.wait(timeout=60) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert live_tasks(array_id) == []
    assert wait_gone([s for s in servers if s is not None], timeout=15), "a server survived"
    assert not list(layout.path.glob("trials/*/done.json"))  # they run again on resume


def test_unseeded_global_draws_differ_in_every_slurm_task(tmp_path: Path, slurm_cluster,
                                                          sweep_env, monkeypatch):
    """Each array task's worker and server draw fresh numbers from the global RNGs."""
    from tests.integration.sweep_helpers import COUNTER_ENV, global_draws

    counter = tmp_path / "draws.txt"
    monkeypatch.setenv(COUNTER_ENV, str(counter))  # array tasks inherit the environment
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(textwrap.dedent(f"""
        name = "draws-on-slurm"
        episodes = 1
        time_limit = 120
        [executor.slurm]
        trials_per_task = 1
        [runtime]
        kind = "local"
        [grid]
        agents = ["{HELPERS}:global_draws_agent"]
        seeds = [0, 1, 2, 3]
        [[grid.benchmarks]]
        benchmark = "{HELPERS}:make_global_draws_env"
        kwargs = {{ record = "{counter}" }}
    """))
    result = run_sweep(spec_path, executor="slurm")
    assert result.ok, [o.error for o in result.outcomes]
    draws = global_draws(counter)
    for who in ("agent", "env"):
        assert len(draws[who]) == 4, draws
        assert len({numpy_draw for numpy_draw, _, _ in draws[who]}) == 4, (who, draws[who])
        assert len({random_draw for _, random_draw, _ in draws[who]}) == 4, (who, draws[who])


def test_a_task_lost_with_its_node_is_submitted_again_with_retries(tmp_path: Path, slurm_cluster,
                                                                    sweep_env, monkeypatch):
    """The first task's process dies as with a node failure; with retries = 1 the trial is
    submitted again (a second array job), completes, and the lost attempt is recorded."""
    from tests.integration.sweep_helpers import COUNTER_ENV

    monkeypatch.setenv(COUNTER_ENV, str(tmp_path / "counter.txt"))
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(textwrap.dedent(f"""
        name = "lost-and-retried"
        time_limit = 120
        retries = 1
        [executor.slurm]
        trials_per_task = 1
        [runtime]
        kind = "local"
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["{HELPERS}:supervisor_killing_agent_once", "random"]
        seeds = [0]
    """))
    spec = load_spec(spec_path)
    result = run_sweep(spec_path, executor="slurm")
    assert len(result.job_ids) == 2  # the array, then the lost trial alone
    by_id = {o.trial_id: o for o in result.outcomes}
    lost, other = spec.trials
    assert sorted(by_id) == sorted([lost.id, other.id])
    assert by_id[lost.id].status == "done" and by_id[other.id].status == "done"
    [retry] = by_id[lost.id].retries
    assert re.fullmatch(r"Slurm task \S+ ended without recording an outcome; see \S+",
                        retry["error"]), retry
    assert by_id[other.id].retries == []
    assert len(read_results_csv(SweepDir(spec.dir).results_csv)) == 2


def test_a_task_stopped_mid_chunk_resumes_with_no_trial_lost_or_run_twice(
        tmp_path: Path, slurm_cluster, sweep_env, monkeypatch):
    """One array task runs all six trials; scancel stops it after some have finished. The
    finished ones stay recorded (the task commits them on SIGTERM), the resumed run runs exactly
    the others, and every trial ends with one record and one row: counted by the agent itself."""
    from tests.integration.sweep_helpers import ACT_DELAY_ENV, COUNTER_ENV

    counter = tmp_path / "counter.txt"
    monkeypatch.setenv(COUNTER_ENV, str(counter))  # array tasks inherit the environment
    monkeypatch.setenv(ACT_DELAY_ENV, "0.03")  # about a second per trial
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(textwrap.dedent(f"""
        name = "stopped-mid-chunk"
        episodes = 1
        time_limit = 120
        [executor.slurm]
        trials_per_task = 6
        [runtime]
        kind = "local"
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["{HELPERS}:counting_agent"]
        seeds = [0, 1, 2, 3, 4, 5]
    """))
    spec = load_spec(spec_path)
    layout = SweepDir(spec.dir)
    code = ("import sys; from dacbench_remote.sweeps import run_sweep; "
            "run_sweep(sys.argv[1], executor='slurm')")
    driver = subprocess.Popen([sys.executable, "-c", code, str(spec_path)], cwd=REPO,
                              env={**os.environ, **sweep_env}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def executions() -> list[tuple[str, str]]:
        text = counter.read_text() if counter.exists() else ""
        return [tuple(line.split()) for line in text.splitlines()]

    try:
        deadline = time.monotonic() + 600  # the task may queue behind others' jobs
        while len(executions()) < 4:  # three finished, the fourth running
            assert time.monotonic() < deadline, "the task did not run its trials"
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.1)
        [array_id] = layout.job_ids()
        assert live_tasks(array_id)  # the one task, still running
        subprocess.run(["scancel", array_id], check=True)
        assert driver.wait(timeout=120) == 0, driver.stdout.read()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    first_run = {t: o.run_id for t, o in layout.outcomes().items()}
    assert 3 <= len(first_run) < 6, first_run
    assert set(first_run.values()) == {executions()[0][0]}

    resumed = run_sweep(spec_path, executor="slurm")

    assert resumed.ok, [o.error for o in resumed.outcomes]
    assert sorted(resumed.skipped) == sorted(first_run)
    assert {o.trial_id for o in resumed.outcomes} == {t.id for t in spec.trials} - set(first_run)
    runs = {}
    for run_id, trial_id in executions():
        runs.setdefault(trial_id, []).append(run_id)
    for trial in spec.trials:
        if trial.id in first_run:  # finished before the task stopped: never run again
            assert runs[trial.id] == [first_run[trial.id]], (trial.id, runs)
        else:  # run once more on resume (the one that was running when stopped: twice in all)
            assert runs[trial.id][-1] == resumed.run_id, (trial.id, runs)
            assert runs[trial.id].count(resumed.run_id) == 1, (trial.id, runs)
    stopped = [t for t, r in runs.items() if len(r) == 2]
    assert len(stopped) <= 1, runs
    # One record per trial in all journals, one row per trial in results.csv.
    records = [json.loads(line)["trial"] for path in layout.journal_dir.glob("*.jsonl")
               for line in path.read_text().splitlines() if '"outcome"' in line]
    assert sorted(records) == sorted(t.id for t in spec.trials)
    rows = read_results_csv(layout.results_csv)
    assert sorted(r["trial_id"] for r in rows) == sorted(t.id for t in spec.trials)
