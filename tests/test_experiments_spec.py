"""Experiment specs: what is refused before anything runs (each problem named by file, step and
key), references between steps, the DAG, search spaces."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dacbench_remote.errors import BadConfig
from dacbench_remote.experiments import parse_experiment, run_experiment
from dacbench_remote.experiments.dag import downstream, find_cycle, topological_order, upstream
from dacbench_remote.experiments.references import resolve
from dacbench_remote.experiments.space import fill, full_grid, parse_space
from dacbench_remote.experiments.step import Params

ENV = "tests.experiment_helpers:make_quadratic_env"

GOOD = f"""
name = "demo"
time_limit = "5m"
[runtime]
kind = "local"
[executor.local]
workers = 2

[steps.tune]
kind = "tune"
benchmark = "{ENV}"
kwargs = {{ x = "{{x}}" }}
agent = "random"
seeds = [0, 1]
episodes = 2
sampler = "grid"
[steps.tune.space]
x = {{ type = "int", low = 0, high = 5 }}

[steps.evaluate]
kind = "evaluate"
needs = ["tune"]
time_limit = 60
benchmark = "{ENV}"
kwargs = {{ x = "${{tune.best.x}}" }}
policies = ["random", {{ name = "fixed", agent = "static:1" }}]
seeds = {{ start = 0, count = 3 }}

[steps.report]
kind = "report"
needs = ["tune", "evaluate"]
"""


def spec(text: str = GOOD, **replacements: str):
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_experiment(textwrap.dedent(text), "/tmp/exp/experiment.toml")


def refused(text: str, *expected: str) -> str:
    with pytest.raises(BadConfig) as caught:
        parse_experiment(textwrap.dedent(text), "/tmp/exp/experiment.toml")
    message = str(caught.value)
    assert message.startswith("experiment.toml: "), message
    for part in expected:
        assert part in message, message
    return message


def test_a_good_spec_gives_steps_in_dag_order_with_inherited_settings():
    parsed = spec()
    assert list(parsed.steps) == ["tune", "evaluate", "report"]
    assert parsed.dir == Path("/tmp/exp/demo")
    tune, evaluate = parsed.steps["tune"], parsed.steps["evaluate"]
    assert tune.time_limit == 300 and evaluate.time_limit == 60
    assert tune.runtime.kind == evaluate.runtime.kind == "local"
    assert evaluate.executor.local.workers == 2
    assert tune.params["trials"] == 6  # the grid's size
    assert evaluate.params["policies"] == {"random": "random", "fixed": "static:1"}


def test_a_step_overrides_runtime_and_executor_tables_key_by_key():
    parsed = spec(**{'[steps.report]': '[steps.evaluate.executor.local]\nwarm = false\n'
                                       '[steps.report]'})
    local = parsed.steps["evaluate"].executor.local
    assert (local.workers, local.warm) == (2, False)
    assert parsed.steps["tune"].executor.local.warm is True


def test_an_unknown_reference_is_refused_naming_the_step_and_key():
    refused(GOOD.replace("${tune.best.x}", "${tune.best.y}"),
            "steps.evaluate.kwargs.x", "${tune.best.y}", "tune.best has no output 'y'")
    refused(GOOD.replace("${tune.best.x}", "${tune.bestest}"),
            "steps.evaluate.kwargs.x", "no output 'bestest'")
    refused(GOOD.replace("${tune.best.x}", "${tuner.best.x}"),
            "steps.evaluate.kwargs.x", "names step 'tuner', which this experiment does not have")
    refused(GOOD.replace("${tune.best.x}", "${tune}"), "steps.evaluate.kwargs.x",
            "is not a reference")


def test_a_reference_to_a_step_that_is_not_needed_is_refused():
    refused(GOOD.replace('needs = ["tune"]\n', ""), "steps.evaluate.kwargs.x",
            "'evaluate' does not need; add it to needs")


def test_a_cycle_is_refused_naming_the_circle():
    text = GOOD.replace('kind = "tune"\n', 'kind = "tune"\nneeds = ["report"]\n')
    message = refused(text, "needs", "circle")
    assert "tune -> " in message or "report -> " in message


def test_needs_naming_no_step_or_itself_are_refused():
    refused(GOOD.replace('needs = ["tune"]', 'needs = ["tuning"]'), "steps.evaluate.needs[0]",
            "'tuning' is not a step")
    refused(GOOD.replace('needs = ["tune"]', 'needs = ["tune", "evaluate"]'),
            "steps.evaluate.needs[1]", "cannot need itself")


def test_wrong_types_are_refused_naming_the_key():
    refused(GOOD.replace("seeds = [0, 1]", 'seeds = "0, 1"'), "steps.tune.seeds")
    refused(GOOD.replace("episodes = 2", "episodes = 0"), "steps.tune.episodes",
            "at least 1")
    refused(GOOD.replace('kind = "report"', 'kind = "report"\nconfidence = 2'),
            "steps.report.confidence")
    refused(GOOD.replace("time_limit = 60", 'time_limit = "soon"'), "steps.evaluate.time_limit")
    refused(GOOD.replace('high = 5', 'high = "5"'), "steps.tune.space.x.high", "integer")
    refused(GOOD.replace('kind = "local"', 'kind = "docker"'), "runtime.kind")
    refused(GOOD.replace('policies = ["random",', 'policies = [7,'), "steps.evaluate.policies[0]")


def test_an_unknown_step_kind_is_refused_listing_the_kinds():
    refused(GOOD.replace('kind = "report"', 'kind = "plot"'), "steps.report.kind",
            "'plot' is not a step kind", "tune", "evaluate", "run")


def test_unknown_keys_are_refused():
    refused(GOOD.replace('sampler = "grid"', 'sampler = "grid"\nsamples = 3'),
            "steps.tune.samples", "unknown key")
    refused(GOOD.replace('name = "demo"', 'name = "demo"\nstep = 1'), "step: unknown key")
    refused(GOOD.replace("[steps.tune.space]", "[steps.tune.space]\ny = { type = \"int\", "
                                               "low = 0, high = 1, choices = [1] }"),
            "steps.tune.space.y.choices")


def test_a_search_space_parameter_used_nowhere_is_refused():
    refused(GOOD.replace('kwargs = { x = "{x}" }', 'kwargs = { x = 3 }'),
            "steps.tune.space.x", "used nowhere")


def test_grid_search_needs_a_finite_space_and_no_more_trials_than_points():
    refused(GOOD.replace('x = { type = "int", low = 0, high = 5 }',
                         'x = { type = "float", low = 0.1, high = 5, log = true }'),
            "steps.tune.sampler", "finite space")
    refused(GOOD.replace('sampler = "grid"', 'sampler = "grid"\ntrials = 9'),
            "steps.tune.trials", "only 6 points")
    refused(GOOD.replace('sampler = "grid"', 'sampler = "tpe"'), "steps.tune.trials",
            "is required")


def test_bad_specs_are_refused_before_any_container_starts(tmp_path: Path, monkeypatch):
    counter = tmp_path / "started"
    monkeypatch.setenv("DACBR_TEST_COUNTER", str(counter))
    bad = GOOD.replace('agent = "random"', 'agent = "tests.experiment_helpers:counting_agent"')
    bad = bad.replace('kind = "report"', 'kind = "plot"')
    path = tmp_path / "experiment.toml"
    path.write_text(bad)
    with pytest.raises(BadConfig, match=r"steps\.report\.kind"):
        run_experiment(path)
    assert not counter.exists()
    assert not (tmp_path / "demo").exists()  # not even the directory


TRAIN = """
name = "trained"
[runtime]
kind = "bwrap"
[steps.train]
kind = "train"
benchmark = "Luby"
agent_image = "agent.sif"
timesteps = 64
hyperparameters = { n_steps = 32 }
eval_episodes = 2
[steps.use]
kind = "run"
needs = ["train"]
function = "tests.experiment_helpers:describe_file"
inputs = { path = "${train.model}", mean_return = "${train.mean_return}" }
outputs = ["sha256"]
"""


def test_a_train_step_is_checked_before_anything_runs_naming_step_and_key(tmp_path: Path):
    parsed = spec(TRAIN)
    train = parsed.steps["train"].params
    assert (train["algorithm"], train["timesteps"], train["seed"], train["num_envs"],
            train["eval_seed"]) == ("PPO", 64, 0, 1, None)
    assert train["agent_image"] == "/tmp/exp/agent.sif"  # relative to the spec
    refused(TRAIN.replace("timesteps = 64", 'timesteps = "x"'), "steps.train.timesteps")
    refused(TRAIN.replace("timesteps = 64", "timesteps = 0"), "steps.train.timesteps",
            "at least 1")
    refused(TRAIN.replace("timesteps = 64\n", ""), "steps.train.timesteps", "is required")
    refused(TRAIN.replace("eval_episodes = 2", "eval_episodes = 2\nepochs = 3"),
            "steps.train.epochs", "unknown key")
    refused(TRAIN.replace("hyperparameters = { n_steps = 32 }", "hyperparameters = 32"),
            "steps.train.hyperparameters")
    refused(TRAIN.replace('benchmark = "Luby"', "benchmark = 3"), "steps.train.benchmark")
    # Without evaluation episodes there is no mean return to reference.
    refused(TRAIN.replace("eval_episodes = 2", "eval_episodes = 0"), "steps.use",
            "train.mean_return")
    path = tmp_path / "experiment.toml"
    path.write_text(TRAIN.replace("timesteps = 64", 'timesteps = "x"'))
    with pytest.raises(BadConfig, match=r"steps\.train\.timesteps"):
        run_experiment(path)
    assert not (tmp_path / "trained").exists()  # not even the directory


def test_a_train_step_on_the_local_runtime_fails_before_it_starts_anything(tmp_path: Path):
    """Each side of a train step runs in its own image: the local runtime cannot do that."""
    path = tmp_path / "experiment.toml"
    path.write_text(TRAIN.replace('kind = "bwrap"', 'kind = "local"'))
    result = run_experiment(path)
    assert result.steps["train"].state == "failed" and result.executed == 0
    assert "steps.train" in result.steps["train"].error
    assert "runtime.kind" in result.steps["train"].error
    assert result.steps["use"].state == "blocked"
    assert not (tmp_path / "trained" / "steps" / "train" / "runs").exists()


BASELINES = """
name = "baselines"
[steps.evaluate]
kind = "evaluate"
benchmark = "Luby"
config = { instance_set_path = "luby_train.csv", test_set_path = "luby_test.csv" }
use_test_set = true
policies = ["dacbench:optimal", "dacbench:random:2", { name = "two", agent = "dacbench:static:2" }]
seeds = [0, 1]
"""


def test_evaluate_takes_dacbench_baseline_specs():
    evaluate = spec(BASELINES).steps["evaluate"]
    assert evaluate.params["policies"] == {"dacbench:optimal": "dacbench:optimal",
                                           "dacbench:random:2": "dacbench:random:2",
                                           "two": "dacbench:static:2"}


def test_dacbench_baselines_that_cannot_run_are_refused_naming_the_policy():
    # DACBench has no optimal policy for CMA-ES, and no "best" baseline at all.
    refused(BASELINES.replace('benchmark = "Luby"', 'benchmark = "CMAES"'),
            "steps.evaluate.policies[0]", "optimal")
    refused(BASELINES.replace('"dacbench:random:2"', '"dacbench:best"'),
            "steps.evaluate.policies[1]", "dacbench:optimal")
    refused(BASELINES.replace('"dacbench:random:2"', '"dacbench:random:x"'),
            "steps.evaluate.policies[1]", "FIXED")
    refused(BASELINES.replace('benchmark = "Luby"', 'benchmark = "gymnasium:CartPole-v1"')
            .replace('config = { instance_set_path = "luby_train.csv", test_set_path = '
                     '"luby_test.csv" }\nuse_test_set = true\n', ''),
            "steps.evaluate.policies[0]", "DACBench benchmarks")
    # The baseline's env is built in the server from the config: the test set is named there.
    refused(BASELINES.replace(', test_set_path = "luby_test.csv"', ''),
            "steps.evaluate.use_test_set", "config.test_set_path")
    refused(BASELINES.replace("seeds = [0, 1]", "seeds = [0, 1]\ninstances = [0, 1]"),
            "steps.evaluate.instances", "DACBench's own instance order")


def test_references_resolve_with_their_types_and_inside_text():
    outputs = {"tune": {"best": {"x": 3, "a": [1, 2]}, "best_value": -0.5, "name": "s"}}
    assert resolve("${tune.best.x}", outputs, "k") == 3
    assert resolve("${tune.best}", outputs, "k") == {"x": 3, "a": [1, 2]}
    assert resolve("static:${tune.best.a}", outputs, "k") == "static:[1, 2]"
    assert resolve(["${tune.name}-${tune.best_value}"], outputs, "k") == ["s--0.5"]
    assert resolve({"v": "${tune.best.a.1}"}, outputs, "k") == {"v": 2}
    assert resolve("cost $${literal}", outputs, "k") == "cost ${literal}"
    with pytest.raises(BadConfig, match=r"k: \$\{tune.best.z\}: tune.best has no 'z'"):
        resolve("${tune.best.z}", outputs, "k")


def test_dag_order_cycles_and_reach():
    needs = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    order = topological_order(needs)
    assert order.index("a") < order.index("b") < order.index("d")
    assert find_cycle(needs) is None
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) in (["a", "c", "b", "a"],)
    assert upstream(needs, "d") == {"a", "b", "c"}
    assert downstream(needs, ["b"]) == {"b", "d"}


def test_a_space_fills_placeholders_with_typed_values():
    params = Params({"space": {"a": {"type": "int", "low": 0, "high": 2},
                               "f": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.5},
                               "c": {"type": "categorical", "choices": ["u", "v"]}}},
                    "e.toml", "steps.t", Path("/"))
    space = parse_space(params)
    assert len(full_grid(space)) == 3 * 3 * 2
    candidate = {"a": 2, "f": 0.5, "c": "u"}
    assert fill("static:{a}", candidate) == "static:2"
    assert fill({"x": "{f}", "y": "{c}"}, candidate) == {"x": 0.5, "y": "u"}
    assert fill('static:{"value_dim_1": [{f}], "n": {a}}', candidate) == \
        'static:{"value_dim_1": [0.5], "n": 2}'
