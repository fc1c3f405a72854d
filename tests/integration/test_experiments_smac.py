"""The tune step with SMAC3 as its optimizer, resumed after the driver was SIGKILLed.

SMAC3 lives in a venv of its own, .venv/smac (`scripts/install-deps.sh --test`): in .venv, an
importable smac makes DACBench 0.5.6 import its DACBO env, which needs omegaconf and torch. The
drivers run in that venv (servers too: the local runtime uses the driver's interpreter); this
process only reads what they wrote and counts the trials they started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from dacbench_remote._sys.procfs import ProcessRecord, wait_gone
from dacbench_remote.sweeps.sweepdir import read_json, read_jsonl
from tests.integration.test_experiments_local import (
    PIPELINE,
    executions,
    experiment_environment,
    quadratic_objective,
    write_spec,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SMAC_PYTHON = REPO / ".venv" / "smac" / "bin" / "python"
DRIVER = ("import sys; from dacbench_remote.experiments import run_experiment; "
          "r = run_experiment(sys.argv[1]); print(r); sys.exit(0 if r.ok else 1)")


@pytest.fixture
def exp_env(monkeypatch, tmp_path: Path) -> dict[str, str]:
    yield from experiment_environment(monkeypatch, tmp_path)


def smac_driver(spec: Path, env: dict) -> subprocess.Popen:
    if not SMAC_PYTHON.exists():
        pytest.fail(f"no SMAC3 venv at {SMAC_PYTHON}; run `bash scripts/install-deps.sh --test` "
                    "(CI does)", pytrace=False)
    return subprocess.Popen([str(SMAC_PYTHON), "-c", DRIVER, str(spec)], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_smac_tunes_and_resumes_after_a_sigkill(tmp_path: Path, exp_env):
    text = PIPELINE.replace('sampler = "grid"', 'optimizer = "smac"\ntrials = 6').replace(
        "batch = 3", "batch = 2")
    spec = write_spec(tmp_path / "experiment.toml", text)
    tune_dir = tmp_path / "pipeline" / "steps" / "tune"
    driver = smac_driver(spec, {**exp_env, "DACBR_TEST_EPISODE_DELAY": "0.4"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            told = [r for r in read_jsonl(tune_dir / "history.jsonl") if r["event"] == "told"]
            if len(told) >= 2 and list(tune_dir.glob("trials/*/running.json")):
                break
            if driver.poll() is not None:
                raise AssertionError(f"the SMAC driver ended early:\n{driver.stdout.read()}")
            time.sleep(0.05)
        else:
            raise AssertionError("the SMAC tune step did not get to its second batch")
        in_flight = []
        for path in tune_dir.glob("trials/*/running.json"):
            in_flight += [ProcessRecord.from_dict(p)
                          for p in (read_json(path) or {}).get("processes", [])]
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert wait_gone(in_flight, timeout=30)
    done_before = {p.parent.name for p in tune_dir.glob("trials/*/done.json")}
    first_run = Counter(t for _, t in executions(exp_env["DACBR_TEST_COUNTER"]))

    again = smac_driver(spec, exp_env)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    records = read_jsonl(tune_dir / "history.jsonl")
    told = [r for r in records if r["event"] == "told"]
    assert len(told) == 6 and len({r["number"] for r in told}) == 6  # as many as requested
    asked = [r["number"] for r in records if r["event"] == "asked"]
    assert sorted(asked) == sorted(r["number"] for r in told)  # nothing asked and dropped
    for record in told:  # each value is the objective of its candidate, computed here
        assert record["value"] == quadratic_objective(record["params"]["x"], [0, 1], 2)
    all_runs = Counter(t for _, t in executions(exp_env["DACBR_TEST_COUNTER"]))
    assert all(all_runs[t] == first_run[t] for t in done_before)  # no finished trial again
    outputs = read_json(tune_dir / "outputs.json")["outputs"]
    assert outputs["best_value"] == max(r["value"] for r in told)
    assert outputs["study"] is None  # SMAC: the history is the store
