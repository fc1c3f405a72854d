"""A run pinned to an experiment identifier, repeated from its results file, is identical.

The experiment is published in a user catalog whose source is the base image built for the
tests, so resolving, fetching into the cache and verifying its sha256 all happen for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dacbench_remote import BadConfig, RemoteRunner
from dacbench_remote._sys.files import sha256_file
from dacbench_remote.host.repeat import repeat_run
from dacbench_remote.host.results import read_run
from dacbench_remote.testing import assert_identical
from tests.trajectories import record_trajectory

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def published_experiment(base_image, tmp_path, monkeypatch) -> str:
    catalog = tmp_path / "catalog" / "benchmarks"
    catalog.mkdir(parents=True)
    (catalog / "test-base.toml").write_text(f"""
family = "test-base"
benchmarks = ["Luby", "ToySGD"]

[[versions]]
experiment = "exp:test-1"
image = "test-base-1.sif"
sha256 = "{sha256_file(base_image)}"
sources = ["{base_image}"]
dacbench = "0.5.6"
""")
    monkeypatch.setenv("DACBENCH_REMOTE_CATALOG", str(catalog))
    monkeypatch.setenv("DACBENCH_REMOTE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "config.toml").write_text("# empty: defaults plus the env vars above\n")
    monkeypatch.setenv("DACBENCH_REMOTE_CONFIG", str(tmp_path / "config.toml"))
    return "exp:test-1"


def test_pinned_run_records_provenance_and_repeats_exactly(published_experiment, tmp_path):
    results = tmp_path / "results.jsonl"
    with RemoteRunner("Luby", experiment=published_experiment, runtime="bwrap",
                      results_path=results) as runner:
        first = runner.run("random", 3, seed=21)
        trajectory = record_trajectory(runner.get_environment(), seed=21)
    record = json.loads(results.read_text().splitlines()[0])
    assert record["experiment"] == published_experiment
    assert record["image_sha256"] == sha256_file(tmp_path / "cache" / "test-base-1.sif")
    assert record["runtime"] == "bwrap" and record["agent"] == "random"
    assert record["dacbench_remote_version"] and record["base_seed"] == 21

    outcome = repeat_run(results, results_path=tmp_path / "again.jsonl")
    assert outcome.identical, outcome.episodes
    assert [e["repeated"] for e in outcome.episodes] == [r.return_ for r in first]

    with RemoteRunner("Luby", experiment=published_experiment, runtime="bwrap") as runner:
        assert_identical(trajectory, record_trajectory(runner.get_environment(), seed=21))


def test_cli_repeat_reports_identical_run(published_experiment, tmp_path):
    command = [sys.executable, "-m", "dacbench_remote", "run", "ToySGD", "--runtime", "bwrap",
               "--experiment", published_experiment, "--episodes", "2", "--out", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "mean return" in first.stdout
    again = subprocess.run(
        [sys.executable, "-m", "dacbench_remote", "run", "--repeat", str(tmp_path / "results.jsonl"),
         "--out", str(tmp_path / "again")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "repeated exactly (2 episodes" in again.stdout


def test_unknown_experiment_lists_the_known_ones(published_experiment):
    from dacbench_remote import ImageNotFound

    with pytest.raises(ImageNotFound) as info:
        RemoteRunner("Luby", experiment="exp:nope", runtime="bwrap").start()
    assert "exp:nope" in str(info.value) and "exp:test-1" in str(info.value)


def test_a_run_on_an_image_file_repeats_on_that_file(base_image, tmp_path):
    results = tmp_path / "results.jsonl"
    with RemoteRunner("Luby", runtime="bwrap", image=base_image, results_path=results) as runner:
        first = runner.run("random", 2, seed=5)
    record = read_run(results)[0]
    assert record["image_path"] == str(base_image) and not record["experiment"]
    assert record["image_sha256"] == sha256_file(base_image)
    assert record["agent_rebuildable"] is True

    outcome = repeat_run(results, results_path=tmp_path / "again.jsonl")
    assert outcome.identical, outcome.episodes
    assert [e["repeated"] for e in outcome.episodes] == [r.return_ for r in first]
    again = read_run(tmp_path / "again.jsonl")
    assert {(r["image_path"], r["runtime"], r["base_seed"]) for r in again} == {
        (str(base_image), "bwrap", 5)}


class CountingAgent:
    """An agent object: it runs, but a results line cannot say how to build it again."""

    def __init__(self, env):
        self.action_space = env.action_space

    def act(self, state, reward):
        return self.action_space.sample()

    def train(self, next_state, reward):
        pass

    def end_episode(self, state, reward):
        pass


def test_a_run_with_an_agent_object_is_refused(tmp_path):
    results = tmp_path / "results.jsonl"
    with RemoteRunner("Luby", runtime="local", results_path=results) as runner:
        runner.run(CountingAgent(runner.get_environment()), 1, seed=0)
    record = read_run(results)[0]
    assert record["agent"] == f"{__name__}:CountingAgent" and record["agent_rebuildable"] is False
    with pytest.raises(BadConfig, match=rf"used the agent '{__name__}:CountingAgent', an object"):
        repeat_run(results)
