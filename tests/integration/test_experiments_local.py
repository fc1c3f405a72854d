"""Experiments on the local executor with real workers and servers (local runtime: a server
subprocess per trial): caching, partial reruns, --force, a killed driver, failing steps, the
run step, the report's figures."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from dacbench_remote._sys.procfs import ProcessRecord, wait_gone
from dacbench_remote.errors import BadConfig
from dacbench_remote.experiments import ExperimentDir, report, run_experiment, status
from dacbench_remote.experiments.report_step import build_figures, report_data
from dacbench_remote.sweeps.sweepdir import read_json, read_jsonl
from dacbench_remote.sweeps.tables import read_results_csv
from tests.integration.test_sweep_local import trial_environment as experiment_environment
from tests.integration.test_sweep_local import write_spec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENV = "tests.experiment_helpers:make_quadratic_env"
COUNTING = "tests.experiment_helpers:counting_agent"


@pytest.fixture
def exp_env(monkeypatch, tmp_path: Path) -> dict[str, str]:
    """Environment for drivers, workers and servers: helpers importable, a private socket dir,
    a counter of trial executions."""
    yield from experiment_environment(monkeypatch, tmp_path)


def executions(counter: str | Path) -> list[tuple[str, str]]:
    """(run id, trial id) per container trial started, as the counting agent recorded them."""
    path = Path(counter)
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []


PIPELINE = f"""
    name = "pipeline"
    time_limit = 120
    [runtime]
    kind = "local"
    [executor.local]
    workers = 2

    [steps.tune]
    kind = "tune"
    benchmark = "{ENV}"
    kwargs = {{ x = "{{x}}" }}
    agent = "{COUNTING}"
    seeds = [0, 1]
    episodes = 2
    sampler = "grid"
    batch = 3
    [steps.tune.space]
    x = {{ type = "int", low = 0, high = 5 }}

    [steps.evaluate]
    kind = "evaluate"
    needs = ["tune"]
    benchmark = "{ENV}"
    kwargs = {{ x = "${{tune.best.x}}" }}
    policies = [{{ name = "counting", agent = "{COUNTING}" }}, "static:0"]
    seeds = [0, 1, 2]
    episodes = 2

    [steps.report]
    kind = "report"
    needs = ["tune", "evaluate"]
"""


def quadratic_objective(x: int, seeds: list[int], episodes: int) -> float:
    """The tune objective, computed in this process with the env itself (no experiment code)."""
    from tests.experiment_helpers import QuadraticEnv

    returns = []
    for seed in seeds:
        env = QuadraticEnv(x)
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(0)
                total += reward
                done = terminated or truncated
            returns.append(total)
    return statistics.fmean(returns)


def test_a_pipeline_runs_then_is_cached_and_reruns_only_what_changed(tmp_path: Path, exp_env):
    spec_path = write_spec(tmp_path / "experiment.toml", PIPELINE)
    counter = exp_env["DACBR_TEST_COUNTER"]

    first = run_experiment(spec_path)
    assert first.ok, first
    assert {n: s.state for n, s in first.steps.items()} == {
        "tune": "done", "evaluate": "done", "report": "done"}
    assert (first.steps["tune"].executed, first.steps["evaluate"].executed) == (12, 6)
    assert len(executions(counter)) == 12 + 3  # the counting policy's trials of evaluate: 3
    tune = first.steps["tune"].outputs
    # The grid's best equals an exhaustive search in this process, by objective value.
    reference = {x: quadratic_objective(x, [0, 1], 2) for x in range(6)}
    assert tune["best_value"] == max(reference.values())
    assert tune["best"] == {"x": 3} and tune["trials"] == tune["completed"] == 6
    told = {r["params"]["x"]: r["value"] for r in read_jsonl(Path(tune["history"]))
            if r["event"] == "told"}
    assert told == reference
    # Every result row carries its provenance.
    rows = read_results_csv(first.steps["evaluate"].outputs["results"])
    assert len(rows) == 2 * 3 * 2
    assert {r["step"] for r in rows} == {"evaluate"}
    assert {r["experiment_name"] for r in rows} == {"pipeline"}
    assert {r["policy"] for r in rows} == {"counting", "static:0"}
    assert {r["seed"] for r in rows} == {0, 1, 2}
    assert all(r["run_id"] == first.run_id and r["parameters"] and r["runtime"] == "local"
               for r in rows)
    assert all(json.loads(r["kwargs"]) == {"x": 3} for r in rows)  # the tuned value went in

    second = run_experiment(spec_path)
    assert second.ok and second.executed == 0
    assert {s.state for s in second.steps.values()} == {"cached"}
    assert len(executions(counter)) == 15  # no container trial started

    # Only the evaluate step changes: it and the report rerun, the tune step is reused.
    write_spec(spec_path, PIPELINE.replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2, 3]"))
    third = run_experiment(spec_path)
    assert {n: s.state for n, s in third.steps.items()} == {
        "tune": "cached", "evaluate": "done", "report": "done"}
    assert third.steps["evaluate"].executed == 8
    ran = Counter(trial for run_id, trial in executions(counter) if run_id == third.run_id)
    assert sum(ran.values()) == 4  # the counting policy over 4 seeds, nothing of tune

    # --force reruns a step and what is downstream of it.
    forced = run_experiment(spec_path, force=["evaluate"])
    assert {n: s.state for n, s in forced.steps.items()} == {
        "tune": "cached", "evaluate": "done", "report": "done"}
    assert forced.steps["evaluate"].executed == 8

    shown = str(status(spec_path))
    assert "tune [tune]: cached" in shown and "tune 6/6 told, best so far" in shown
    assert "evaluate [evaluate] <- tune: done, trials 8/8 finished" in shown


def test_the_report_has_the_expected_panels_and_series(tmp_path: Path, exp_env):
    spec_path = write_spec(tmp_path / "experiment.toml", PIPELINE)
    result = run_experiment(spec_path)
    assert result.ok, result
    outputs = result.steps["report"].outputs
    for name in ("history", "distributions", "ranking"):
        png = Path(outputs["figures"][name])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    markdown = Path(outputs["markdown"]).read_text()
    assert "## Tuning" in markdown and "## Evaluation: evaluate" in markdown
    assert "![ranking](ranking.png)" in markdown
    assert "<img src='history.png'" in Path(outputs["html"]).read_text()

    # The same figures, looked at through matplotlib's objects.
    layout = ExperimentDir(result.directory)
    inputs = {n: layout.outputs(n)["outputs"] for n in ("tune", "evaluate")}
    figures = build_figures(report_data(inputs))
    assert set(figures) == {"history", "distributions", "ranking"}  # no instances: not DACBench
    [history] = figures["history"].axes
    assert len(history.lines) == 2  # each trial's value, the best so far
    assert list(history.lines[0].get_xdata()) == list(range(6))
    [ranking] = figures["ranking"].axes
    assert len(ranking.containers) == 2  # one error bar per policy
    assert [t.get_text() for t in ranking.get_yticklabels()][-1] == \
        max(("counting", "static:0"), key=lambda n: inputs["evaluate"]["summary"][n]["mean"])
    [boxes] = figures["distributions"].axes
    assert [t.get_text() for t in boxes.get_xticklabels()] == ["counting", "static:0"]

    again = report(spec_path)
    assert not again.missing and set(again.written) == {"report"}


def test_a_failing_step_stops_only_its_dependents(tmp_path: Path, exp_env):
    spec_path = write_spec(tmp_path / "experiment.toml", f"""
        name = "failing"
        time_limit = 120
        [runtime]
        kind = "local"
        [steps.good]
        kind = "evaluate"
        benchmark = "{ENV}"
        policies = ["random"]
        seeds = [0]
        [steps.bad]
        kind = "evaluate"
        benchmark = "tests.experiment_helpers:make_raising_env"
        policies = ["random"]
        seeds = [0]
        [steps.broken_function]
        kind = "run"
        function = "tests.experiment_helpers:raising_function"
        inputs = {{ a = 1 }}
        [steps.after_bad]
        kind = "report"
        needs = ["bad"]
        [steps.after_function]
        kind = "evaluate"
        needs = ["broken_function"]
        benchmark = "{ENV}"
        policies = ["random"]
        seeds = [0]
        [steps.after_good]
        kind = "report"
        needs = ["good"]
    """)
    result = run_experiment(spec_path)
    states = {n: s.state for n, s in result.steps.items()}
    assert states == {"good": "done", "bad": "failed", "broken_function": "failed",
                      "after_bad": "blocked", "after_function": "blocked",
                      "after_good": "done"}
    assert not result.ok and sorted(result.failed) == ["bad", "broken_function"]
    assert "this benchmark raises on purpose" in result.steps["bad"].error
    assert "the run step's function raises on purpose" in \
        result.steps["broken_function"].error
    assert "needs bad" in result.steps["after_bad"].error

    cli = subprocess.run([sys.executable, "-m", "dacbench_remote", "experiment", "run",
                          str(spec_path)], capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 1
    assert "step bad failed: RuntimeError" in cli.stdout
    assert "this benchmark raises on purpose" in cli.stdout
    assert "step(s) failed: bad, broken_function" in cli.stderr

    # A failed step's failed trials run again on a rerun (their outcomes are taken back from the
    # sweep journal, not reused); the step that was done is cached.
    again = run_experiment(spec_path)
    assert result.steps["bad"].executed >= 1
    assert again.steps["bad"].executed == result.steps["bad"].executed
    assert again.steps["good"].state == "cached" and again.steps["good"].executed == 0


def test_the_run_step_calls_a_function_in_the_image_and_later_steps_use_its_outputs(
        tmp_path: Path, exp_env):
    spec_path = write_spec(tmp_path / "experiment.toml", """
        name = "functions"
        [runtime]
        kind = "local"
        [steps.prepare]
        kind = "run"
        function = "tests.experiment_helpers:double"
        inputs = { values = [1, 2.5], factor = 3 }
        outputs = ["doubled", "count"]
        [steps.use]
        kind = "run"
        needs = ["prepare"]
        function = "tests.experiment_helpers:double"
        inputs = { values = "${prepare.doubled}", factor = "${prepare.count}" }
        outputs = ["doubled"]
    """)
    result = run_experiment(spec_path)
    assert result.ok, result
    prepared = result.steps["prepare"].outputs
    assert prepared["doubled"] == [3, 7.5] and prepared["count"] == 2
    assert prepared["pid"] != os.getpid()  # it ran in the server, not here
    assert result.steps["use"].outputs["doubled"] == [6, 15.0]


def test_a_reference_of_the_wrong_type_is_refused_before_the_step_starts(tmp_path, exp_env):
    spec_path = write_spec(tmp_path / "experiment.toml", f"""
        name = "wrong-type"
        [runtime]
        kind = "local"
        [steps.prepare]
        kind = "run"
        function = "tests.experiment_helpers:double"
        inputs = {{ values = [1] }}
        outputs = ["count"]
        [steps.use]
        kind = "evaluate"
        needs = ["prepare"]
        benchmark = "{ENV}"
        policies = ["{COUNTING}"]
        seeds = "${{prepare.count}}"
    """)
    result = run_experiment(spec_path)
    assert result.steps["use"].state == "failed"
    assert "steps.use.seeds" in result.steps["use"].error
    assert executions(exp_env["DACBR_TEST_COUNTER"]) == []


DRIVER = "import sys; from dacbench_remote.experiments import run_experiment; run_experiment(sys.argv[1])"


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_sigkill_of_the_driver_mid_tune_resumes_the_study_and_repeats_no_finished_trial(
        tmp_path: Path, exp_env, stop: signal.Signals):
    """Killed (SIGKILL: no cleanup runs in the driver) or stopped (SIGTERM, Ctrl-C: it stops its
    trials and marks the step interrupted) mid-tune: the next run continues the study."""
    import optuna

    spec_path = write_spec(tmp_path / "experiment.toml", PIPELINE.replace(
        "batch = 3", "batch = 2"))
    layout = ExperimentDir(tmp_path / "pipeline")
    tune_dir = layout.step_dir("tune")
    env = {**os.environ, **exp_env, "DACBR_TEST_EPISODE_DELAY": "0.4"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec_path)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # killed while its second batch runs
            told = [r for r in read_jsonl(tune_dir / "history.jsonl") if r["event"] == "told"]
            if len(told) >= 2 and list(tune_dir.glob("trials/*/running.json")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the tune step did not get to its second batch")
        in_flight = []
        for path in tune_dir.glob("trials/*/running.json"):
            in_flight += [ProcessRecord.from_dict(p)
                          for p in (read_json(path) or {}).get("processes", [])]
        driver.send_signal(stop)
        assert driver.wait(timeout=30) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert in_flight, "no trial was running when the driver was killed"
    assert wait_gone(in_flight, timeout=30), "processes of the killed driver's trials survived"
    done_before = {p.parent.name for p in tune_dir.glob("trials/*/done.json")}
    told_before = [r for r in read_jsonl(tune_dir / "history.jsonl") if r["event"] == "told"]
    assert 2 <= len(told_before) < 6
    # What the killed driver left; a stopped one says so.
    assert layout.state("tune")["state"] == ("running" if stop == signal.SIGKILL
                                             else "interrupted")
    first_run = Counter(t for _, t in executions(exp_env["DACBR_TEST_COUNTER"]))

    result = run_experiment(spec_path)
    assert result.ok, result
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tune_dir / "study.journal")))
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    states = Counter(t.state.name for t in study.trials)
    assert states == {"COMPLETE": 6}  # the study went on: as many trials as requested
    assert sorted(t.params["x"] for t in study.trials) == list(range(6))
    all_runs = Counter(t for _, t in executions(exp_env["DACBR_TEST_COUNTER"]))
    assert all(all_runs[t] == first_run[t] for t in done_before)  # none ran again
    assert result.steps["tune"].outputs["best"] == {"x": 3}
    assert result.steps["tune"].executed == 12 - len(done_before)


def test_a_second_driver_on_the_same_directory_is_refused(tmp_path: Path, exp_env):
    from dacbench_remote.errors import SweepAlreadyRunning

    spec_path = write_spec(tmp_path / "experiment.toml", PIPELINE)
    env = {**os.environ, **exp_env, "DACBR_TEST_EPISODE_DELAY": "0.3"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec_path)], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        layout = ExperimentDir(tmp_path / "pipeline")
        deadline = time.monotonic() + 60
        while layout.state("tune")["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(SweepAlreadyRunning, match="experiment cancel"):
            run_experiment(spec_path)
        from dacbench_remote.experiments import cancel

        stopped = cancel(spec_path)
        assert "stopped" in stopped.driver
        assert driver.wait(timeout=30) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert layout.state("tune")["state"] == "interrupted"


def test_force_names_a_step_of_the_experiment(tmp_path: Path):
    spec_path = write_spec(tmp_path / "experiment.toml", PIPELINE)
    with pytest.raises(BadConfig, match="no step 'tuning'"):
        run_experiment(spec_path, force=["tuning"])


def test_evaluate_on_the_test_set_equals_dacbench_in_process(tmp_path: Path, exp_env):
    """Both ways to the test set against DACBench in this process: a config naming its test set
    (it becomes the instance set) and DACBench's use_test_set() on the env's own test set;
    returns and instance ids per episode, the global RNGs seeded as the server documents."""
    import random

    import gymnasium
    import numpy as np

    from dacbench_remote.host.agents import make_agent
    from dacbench_remote.host.runner import run_episode
    from tests.needs import need_module

    benchmarks = need_module("dacbench.benchmarks")
    luby_config = {"instance_set_path": "luby_train.csv", "test_set_path": "luby_test.csv"}
    spec_path = write_spec(tmp_path / "experiment.toml", """
        name = "test-set"
        [runtime]
        kind = "local"
        [steps.luby]
        kind = "evaluate"
        benchmark = "Luby"
        config = { instance_set_path = "luby_train.csv", test_set_path = "luby_test.csv" }
        use_test_set = true
        policies = ["static:2", "random"]
        seeds = [0, 1]
        episodes = 3
        [steps.fa]
        kind = "evaluate"
        benchmark = "FunctionApproximation"
        use_test_set = true
        policies = ["random"]
        seeds = [0, 1]
        episodes = 3
    """)
    result = run_experiment(spec_path)
    assert result.ok, result

    class GlobalSeeding(gymnasium.Wrapper):
        def reset(self, *, seed=None, options=None):
            if seed is not None:
                random.seed(seed)
                np.random.seed(seed)
            return self.env.reset(seed=seed, options=options)

    def in_process(name: str, config: dict, agent_spec: str, seed: int, switch: bool) -> list:
        benchmark = getattr(benchmarks, f"{name}Benchmark")()
        for key, value in config.items():
            benchmark.config[key] = value
        random.seed(benchmark.config["seed"])
        np.random.seed(benchmark.config["seed"])
        env = benchmark.get_environment()
        if switch:
            env.use_test_set()
        env = GlobalSeeding(env)
        agent = make_agent(agent_spec, env, seed)
        episodes = []
        for episode in range(3):
            done = run_episode(env, agent, episode, seed + episode)
            episodes.append((done.return_, env.unwrapped.get_inst_id()))
        return episodes

    luby_test = {**luby_config, "instance_set_path": "luby_test.csv"}
    for step, name, config, switch in (("luby", "Luby", luby_test, False),
                                       ("fa", "FunctionApproximation", {}, True)):
        rows = read_results_csv(result.steps[step].outputs["results"])
        for policy in {r["policy"] for r in rows}:
            for seed in (0, 1):
                remote = [(r["return"], int(r["instance"])) for r in rows
                          if r["policy"] == policy and r["seed"] == seed]
                assert remote == in_process(name, config, policy, seed, switch), (step, policy)
    # The test instances are not the training ones: the same env on its training set differs.
    train = in_process("Luby", luby_config, "static:2", 0, False)
    assert train != in_process("Luby", luby_test, "static:2", 0, False)


def test_evaluate_runs_dacbench_baselines_on_the_test_set_as_dacbench_does(tmp_path: Path,
                                                                          exp_env):
    """dacbench:optimal and dacbench:random in an evaluate step (next to the env, in its server)
    on the test instances a config names, against DACBench's own agents and policies run here
    with the seeding server/baselines documents: returns per seed and episode."""
    import random

    import numpy as np

    from tests.needs import need_module

    benchmarks = need_module("dacbench.benchmarks")
    from dacbench.agents import DynamicRandomAgent, GenericAgent
    from dacbench.envs.policies import OPTIMAL_POLICIES

    configs = {"Luby": {"instance_set_path": "luby_train.csv", "test_set_path": "luby_test.csv"},
               "FunctionApproximation": {"instance_set_path": "sigmoid_2D3M_train.csv",
                                         "test_set_path": "sigmoid_2D3M_test.csv"}}
    steps = "".join(f"""
        [steps.{name.lower()}]
        kind = "evaluate"
        benchmark = "{name}"
        config = {{ instance_set_path = "{train}", test_set_path = "{test}" }}
        use_test_set = true
        policies = ["dacbench:optimal", "dacbench:random", "static:1"]
        seeds = [0, 1]
        episodes = 3
    """ for name, (train, test) in ((n, c.values()) for n, c in configs.items()))
    spec_path = write_spec(tmp_path / "experiment.toml",
                           '        name = "baselines"\n        [runtime]\n        kind = "local"'
                           + steps)
    result = run_experiment(spec_path)
    assert result.ok, result

    def in_process(name: str, kind: str, seed: int, instances: str = "test_set_path"
                   ) -> list[float]:
        random.seed(seed)
        np.random.seed(seed)
        benchmark = getattr(benchmarks, f"{name}Benchmark")()
        benchmark.config["instance_set_path"] = configs[name][instances]
        benchmark.set_seed(seed)
        env = benchmark.get_environment()
        env.action_space.seed(seed)
        agent = (GenericAgent(env, OPTIMAL_POLICIES[f"{name}Benchmark"]) if kind == "optimal"
                 else DynamicRandomAgent(env, 0))
        returns = []
        for _ in range(3):  # DACBench's run_benchmark: episodes reset without a seed
            state, _ = env.reset()
            total, reward, done = 0.0, 0, False
            while not done:
                state, reward, terminated, truncated, _ = env.step(agent.act(state, reward))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        return returns

    for name in configs:
        rows = read_results_csv(result.steps[name.lower()].outputs["results"])
        assert {r["policy"] for r in rows} == {"dacbench:optimal", "dacbench:random", "static:1"}
        for kind in ("optimal", "random"):
            for seed in (0, 1):
                remote = [r["return"] for r in rows
                          if r["policy"] == f"dacbench:{kind}" and r["seed"] == seed]
                assert remote == in_process(name, kind, seed), (name, kind, seed)
        summary = result.steps[name.lower()].outputs["summary"]
        assert summary["dacbench:optimal"]["mean"] >= summary["dacbench:random"]["mean"], name
        # The test instances are not the training ones: there the same policy scores otherwise.
        assert in_process(name, "random", 0, "instance_set_path") != in_process(name, "random", 0)


def test_a_sweep_step_runs_the_grid_a_sweep_spec_runs(tmp_path: Path, exp_env):
    """The same grid as a sweep step and as sweep.toml: the same trials, the same returns."""
    from dacbench_remote.sweeps import load_spec, run_sweep

    grid = f"""
        [grid]
        benchmarks = ["gymnasium:CartPole-v1", {{ benchmark = "{ENV}", kwargs = {{ x = 2 }} }}]
        agents = ["random", "static"]
        seeds = [0, 1]
    """
    sweep_spec = write_spec(tmp_path / "sweep.toml", 'name = "plain"\nepisodes = 2\n'
                            '[runtime]\nkind = "local"\n' + textwrap.dedent(grid))
    swept = run_sweep(sweep_spec, workers=2)
    assert swept.ok
    spec_path = write_spec(tmp_path / "experiment.toml", """
        name = "as-step"
        [runtime]
        kind = "local"
        [steps.grid]
        kind = "sweep"
        episodes = 2
    """ + textwrap.dedent(grid).replace("[grid]", "[steps.grid.grid]"))
    result = run_experiment(spec_path)
    assert result.ok, result
    rows = read_results_csv(result.steps["grid"].outputs["results"])
    plain = read_results_csv(load_spec(sweep_spec).dir / "results.csv")
    assert len(rows) == len(plain) == 2 * 2 * 2 * 2
    assert {(r["trial_id"], r["episode"], r["return"]) for r in rows} == \
        {(r["trial_id"], r["episode"], r["return"]) for r in plain}
    assert {r["step"] for r in rows} == {"grid"}


def test_candidates_alike_in_one_batch_share_their_trials(tmp_path: Path, exp_env):
    """A space of one point, asked three times at once: one trial per seed runs, not three
    racing for one trial directory; each candidate is told the same value."""
    spec_path = write_spec(tmp_path / "experiment.toml", f"""
        name = "alike"
        [runtime]
        kind = "local"
        [steps.tune]
        kind = "tune"
        benchmark = "{ENV}"
        kwargs = {{ x = "{{x}}" }}
        agent = "{COUNTING}"
        seeds = [0, 1]
        episodes = 1
        sampler = "random"
        trials = 3
        batch = 3
        [steps.tune.space]
        x = {{ type = "categorical", choices = [2] }}
    """)
    result = run_experiment(spec_path)
    assert result.ok, result
    assert len(executions(exp_env["DACBR_TEST_COUNTER"])) == 2
    told = [r for r in read_jsonl(Path(result.steps["tune"].outputs["history"]))
            if r["event"] == "told"]
    assert len(told) == 3 and len({r["value"] for r in told}) == 1
    assert told[0]["value"] == quadratic_objective(2, [0, 1], 1)


def test_a_registered_step_kind_is_usable_with_references_to_its_outputs(tmp_path: Path,
                                                                        exp_env):
    """The extension point the `train` kind uses: a StepKind registered with register_kind is
    checked with the spec, its outputs are referenced (`${train.agent}`, `${train.model}`),
    unknown outputs are refused, and it is cached like every other kind."""
    from dacbench_remote.experiments import STEP_KINDS, StepKind, register_kind

    calls = []

    class CustomStep(StepKind):  # a host-only kind of the `train` kind's shape
        name = "custom"
        keys = frozenset({"action"})
        runs_containers = False

        def check(self, params):
            return {"action": params.integer("action", required=True, minimum=0)}

        def outputs(self, params):
            return {"model": None, "agent": None, "x": None}

        def run(self, ctx):
            calls.append(ctx.step.name)
            model = ctx.dir / "model.json"
            model.write_text(json.dumps({"action": ctx.params["action"]}))
            return {"model": str(model), "agent": f"static:{ctx.params['action']}", "x": 2}

    text = f"""
        name = "trained"
        [runtime]
        kind = "local"
        [steps.train]
        kind = "custom"
        action = 1
        [steps.evaluate]
        kind = "evaluate"
        needs = ["train"]
        benchmark = "{ENV}"
        kwargs = {{ x = "${{train.x}}" }}
        policies = [{{ name = "trained", agent = "${{train.agent}}" }}]
        seeds = [0]
        [steps.report]
        kind = "report"
        needs = ["train", "evaluate"]
        title = "Trained: ${{train.model}}"
    """
    with pytest.raises(BadConfig, match=r"steps\.train\.kind"):  # not a kind before it is added
        run_experiment(write_spec(tmp_path / "experiment.toml", text))
    register_kind(CustomStep())
    try:
        with pytest.raises(BadConfig, match=r"steps\.report.*train\.weights"):
            run_experiment(write_spec(tmp_path / "experiment.toml",
                                      text.replace("train.model", "train.weights")))
        with pytest.raises(BadConfig, match=r"steps\.train\.action"):
            run_experiment(write_spec(tmp_path / "experiment.toml",
                                      text.replace("action = 1", 'action = "one"')))
        spec_path = write_spec(tmp_path / "experiment.toml", text)
        result = run_experiment(spec_path)
        assert result.ok, result
        rows = read_results_csv(result.steps["evaluate"].outputs["results"])
        model = result.steps["train"].outputs["model"]
        assert json.loads(Path(model).read_text()) == {"action": 1}
        assert {r["agent"] for r in rows} == {"static:1"}
        assert {json.loads(r["kwargs"])["x"] for r in rows} == {2}
        markdown = Path(result.steps["report"].outputs["markdown"]).read_text()
        assert f"Trained: {model}" in markdown
        again = run_experiment(spec_path)
        assert again.ok and again.executed == 0 and calls == ["train"]  # cached, not rerun
    finally:
        STEP_KINDS.pop("custom", None)


def test_independent_steps_run_at_the_same_time(tmp_path: Path, exp_env):
    """Two evaluate steps that need nothing: each one's env waits until the other's exists,
    so both finish only if the driver runs them concurrently (not one after the other)."""
    meet = tmp_path / "meet"
    meet.mkdir()
    steps = "".join(f"""
        [steps.{me}]
        kind = "evaluate"
        benchmark = "tests.experiment_helpers:make_rendezvous_env"
        kwargs = {{ directory = "{meet}", me = "{me}", other = "{other}" }}
        policies = ["static:0"]
        seeds = [0]
    """ for me, other in (("a", "b"), ("b", "a")))
    result = run_experiment(write_spec(tmp_path / "experiment.toml", """
        name = "together"
        [runtime]
        kind = "local"
        [executor.local]
        workers = 1
    """ + steps))
    assert result.ok, result
    assert sorted(p.name for p in meet.iterdir()) == ["a", "b"]


def test_the_cli_runs_shows_reports_and_cancels_an_experiment(tmp_path: Path, exp_env):
    spec_path = write_spec(tmp_path / "experiment.toml", PIPELINE.replace(
        "seeds = [0, 1, 2]", "seeds = [0]"))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dacbench_remote", "experiment", *args],
                              capture_output=True, text=True, cwd=REPO, timeout=300)

    before = cli("report", str(spec_path))  # nothing ran yet
    assert before.returncode != 0 and "pipeline" in before.stdout + before.stderr
    ran = cli("run", str(spec_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    shown = cli("status", str(spec_path))
    assert shown.returncode == 0
    assert "tune [tune]: done" in shown.stdout and "tune 6/6 told, best so far" in shown.stdout
    assert "evaluate [evaluate] <- tune: done" in shown.stdout
    report_md = tmp_path / "pipeline" / "steps" / "report" / "report.md"
    report_md.unlink()
    rewritten = cli("report", str(tmp_path / "pipeline"))  # the directory works too
    assert rewritten.returncode == 0, rewritten.stdout + rewritten.stderr
    assert "report report:" in rewritten.stdout and "3 figure(s)" in rewritten.stdout
    assert report_md.exists()
    stopped = cli("cancel", str(spec_path))
    assert stopped.returncode == 0 and "driver not running" in stopped.stdout
    again = cli("run", str(spec_path))
    assert again.returncode == 0 and ", 0 trial(s) executed" in again.stdout
