"""Experiments on the one-node Slurm (scripts/slurm-cluster.sh): a tune step whose array job is
killed from outside (scancel, as a preemption or a dead node would) fails named, and the next
run resumes its study without repeating a finished trial."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dacbench_remote.experiments import ExperimentDir, run_experiment
from dacbench_remote.sweeps.slurm_jobs import live_tasks
from dacbench_remote.sweeps.sweepdir import read_json, read_jsonl
from tests.integration.test_experiments_local import (
    PIPELINE,
    executions,
    experiment_environment,
    write_spec,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DRIVER = ("import sys; from dacbench_remote.experiments import run_experiment; "
          "r = run_experiment(sys.argv[1], executor='slurm'); print(r); "
          "sys.exit(0 if r.ok else 1)")


@pytest.fixture
def exp_env(monkeypatch, tmp_path: Path) -> dict[str, str]:
    yield from experiment_environment(monkeypatch, tmp_path)


@pytest.mark.usefixtures("slurm_cluster")
def test_a_killed_slurm_array_fails_its_step_and_the_next_run_resumes_the_study(
        tmp_path: Path, exp_env):
    import optuna

    text = PIPELINE.replace("high = 5", "high = 3").replace("batch = 3", "batch = 2")
    text = text.replace("[executor.local]", "[executor.slurm]\npoll_interval = 0.5\n"
                                            "[executor.local]")
    spec = write_spec(tmp_path / "experiment.toml", text)
    layout = ExperimentDir(tmp_path / "pipeline")
    tune_dir = layout.step_dir("tune")
    env = {**os.environ, **exp_env, "DACBR_TEST_EPISODE_DELAY": "1.0"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        second = None
        while time.monotonic() < deadline and second is None:
            jobs = (read_json(layout.driver) or {}).get("slurm_jobs", [])
            told = [r for r in read_jsonl(tune_dir / "history.jsonl") if r["event"] == "told"]
            if len(jobs) >= 2 and len(told) >= 2 and live_tasks(jobs[1]):
                second = jobs[1]
            time.sleep(0.2)
        assert second, "the tune step did not submit its second batch"
        subprocess.run(["scancel", second], check=True)  # preempted, or its node died
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 1, output
    assert "step tune failed" in output and "ended without an outcome" in output
    assert layout.state("evaluate")["state"] == "blocked"
    done_before = {p.parent.name for p in tune_dir.glob("trials/*/done.json")}
    first_run = Counter(t for _, t in executions(exp_env["DACBR_TEST_COUNTER"]))

    result = run_experiment(spec, executor="slurm")
    assert result.ok, result
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tune_dir / "study.journal")))
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 4}
    all_runs = Counter(t for _, t in executions(exp_env["DACBR_TEST_COUNTER"]))
    assert all(all_runs[t] == first_run[t] for t in done_before)  # none ran again
    assert result.steps["tune"].outputs["best"] == {"x": 3}


@pytest.mark.usefixtures("slurm_cluster")
def test_a_run_step_runs_as_a_slurm_job(tmp_path: Path, exp_env):
    spec = write_spec(tmp_path / "experiment.toml", """
        name = "function-on-slurm"
        [runtime]
        kind = "local"
        [executor]
        kind = "slurm"
        [executor.slurm]
        poll_interval = 0.5
        [steps.prepare]
        kind = "run"
        function = "tests.experiment_helpers:double"
        inputs = { values = [1, 2], factor = 2.5 }
        outputs = ["doubled"]
    """)
    result = run_experiment(spec)
    assert result.ok, result
    assert result.steps["prepare"].outputs["doubled"] == [2.5, 5.0]
    [script] = (tmp_path / "function-on-slurm" / "steps" / "prepare" / "slurm").glob(
        "*_submission.sh")
    assert "#SBATCH" in script.read_text()
