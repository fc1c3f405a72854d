"""DACBench's baselines as agent specs (wire/baselines, server/baselines, host/baselines): specs,
refusals, and runs with the server in a subprocess of this interpreter (the local runtime, with
DACBench 0.5.6 installed here) compared with DACBench's own run_baselines functions in-process.

The same comparison against the images (and a venv of each image's pins) is in
tests/integration/test_baselines.py.
"""

from __future__ import annotations

import ast
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dacbench_remote import RemoteRunner
from dacbench_remote.errors import BadConfig, RemoteError, ServerCrashed
from dacbench_remote.host.agents import make_agent
from dacbench_remote.host.repeat import repeat_run
from dacbench_remote.host.results import read_records
from dacbench_remote.sweeps.spec import load_spec
from dacbench_remote.wire.baselines import (
    DACBENCH_BENCHMARKS,
    POLICY_BENCHMARKS,
    BaselineSpec,
    parse_baseline,
)
from tests.baseline_reference import assert_same_as_reference, reference
from tests.needs import need_module

SEEDS = [0, 1]
EPISODES = 3
# Per light benchmark: every baseline DACBench has for it (static actions fitting its space).
LIGHT_BASELINES = {
    "LubyBenchmark": ["dacbench:random", "dacbench:random:3", "dacbench:static:1.0",
                      "dacbench:optimal"],
    "FunctionApproximationBenchmark": [
        "dacbench:random", 'dacbench:static:{"value_dim_1": 0.5, "value_dim_2": 3}',
        "dacbench:optimal"],
    "ToySGDBenchmark": ["dacbench:random", "dacbench:random:2", "dacbench:static:[-3.0, -1.0]"],
}


@pytest.mark.parametrize(("spec", "expected"), [
    ("dacbench:random", BaselineSpec("random", fixed=0)),
    ("dacbench:random:3", BaselineSpec("random", fixed=3)),
    ("dacbench:static:2", BaselineSpec("static", action=2)),
    ("dacbench:static:0.5", BaselineSpec("static", action=0.5)),
    ("dacbench:static:[1, 0]", BaselineSpec("static", action=[1, 0])),
    ("dacbench:optimal", BaselineSpec("optimal")),
    ("dacbench:dynamic", BaselineSpec("dynamic")),
])
def test_specs_name_dacbench_s_baselines(spec, expected):
    assert parse_baseline(spec) == expected


@pytest.mark.parametrize(("spec", "problem"), [
    ("dacbench:static", "needs its action"),
    ("dacbench:static:{", "not valid JSON"),
    ("dacbench:random:x", "integer >= 0), not 'x'"),
    ("dacbench:random:-1", "integer >= 0), not '-1'"),
    ("dacbench:random:1.5", "integer >= 0"),
    ("dacbench:optimal:1", "takes no argument"),
    ("dacbench:csa", "'csa' is not one of DACBench's baselines"),
])
def test_bad_specs_are_refused_saying_what_is_wrong(spec, problem):
    with pytest.raises(BadConfig) as refused:
        parse_baseline(spec)
    assert problem in str(refused.value) and repr(spec) in str(refused.value)


def test_the_policy_table_is_dacbench_s_own():
    policies = need_module("dacbench.envs.policies")
    assert POLICY_BENCHMARKS["optimal"] == tuple(policies.OPTIMAL_POLICIES)
    assert POLICY_BENCHMARKS["dynamic"] == tuple(policies.NON_OPTIMAL_POLICIES)
    # Every benchmark class DACBench defines (read from its files: some need extras to import).
    directory = Path(need_module("dacbench.benchmarks").__file__).parent
    classes = {node.name for path in directory.glob("*.py")
               for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.ClassDef) and node.name.endswith("Benchmark")}
    assert classes == set(DACBENCH_BENCHMARKS)


@pytest.mark.parametrize(("benchmark", "spec", "having"), [
    ("ToySGD", "dacbench:optimal", "LubyBenchmark, FunctionApproximationBenchmark, "
                                   "FastDownwardBenchmark"),
    ("CMAESBenchmark", "dacbench:optimal", "LubyBenchmark, FunctionApproximationBenchmark"),
    ("Luby", "dacbench:dynamic", "CMAESBenchmark, SGDBenchmark"),
])
def test_an_unavailable_baseline_is_refused_before_any_server_starts(tmp_path, benchmark, spec,
                                                                     having):
    # An image that does not exist: starting anything would fail with ImageNotFound instead.
    runner = RemoteRunner(benchmark, runtime="bwrap", image=tmp_path / "missing.sif",
                          results_path=tmp_path / "results.jsonl")
    with pytest.raises(BadConfig) as refused:
        runner.run(spec, 1, seed=0)
    message = str(refused.value)
    assert f"is not available for {benchmark.removesuffix('Benchmark')}Benchmark" in message
    assert having in message
    assert runner.server is None and runner.runtime is None
    assert not (tmp_path / "results.jsonl").exists()


def test_a_benchmark_object_without_the_policy_is_refused_before_starting(tmp_path):
    benchmarks = need_module("dacbench.benchmarks")
    runner = RemoteRunner(benchmarks.ToySGDBenchmark(), runtime="bwrap",
                          image=tmp_path / "missing.sif")
    with pytest.raises(BadConfig, match="not available for ToySGDBenchmark"):
        runner.run("dacbench:optimal", 1)
    assert runner.server is None


def test_a_gymnasium_env_has_no_dacbench_baselines(tmp_path):
    runner = RemoteRunner("gymnasium:CartPole-v1", runtime="local", results_path=None)
    with pytest.raises(BadConfig, match="run on DACBench benchmarks, not on gymnasium:Cart"):
        runner.run("dacbench:random", 1)
    assert runner.server is None


def test_make_agent_sends_baselines_to_the_server():
    with pytest.raises(BadConfig, match="run in the server next to the env"):
        make_agent("dacbench:optimal", env=None)


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_sweep_specs_take_baselines_and_refuse_unavailable_pairs(tmp_path):
    good = load_spec(_spec(tmp_path, """
        name = "b"
        [grid]
        benchmarks = ["Luby", "FunctionApproximation"]
        agents = ["dacbench:optimal", "dacbench:random:2", "random"]
        seeds = [0, 1]
    """))
    assert {t.agent for t in good.trials} == {"dacbench:optimal", "dacbench:random:2", "random"}
    with pytest.raises(BadConfig) as refused:
        load_spec(_spec(tmp_path, """
            name = "b"
            [grid]
            benchmarks = ["Luby", "ToySGD"]
            agents = ["dacbench:optimal"]
            seeds = [0]
        """))
    assert "grid.agents: dacbench:optimal (--optimal) is not available for ToySGDBenchmark" in \
        str(refused.value) and "[[trials]]" in str(refused.value)
    with pytest.raises(BadConfig, match=r"trials\[0\].agent: agent 'dacbench:random:x'"):
        load_spec(_spec(tmp_path, """
            name = "b"
            [[trials]]
            benchmark = "Luby"
            agent = "dacbench:random:x"
        """))


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(benchmark, spec) -> the directory DACBench's run_baselines wrote in-process here."""
    need_module("dacbench")
    found = {}
    for benchmark, specs in LIGHT_BASELINES.items():
        for spec in specs:
            outdir = tmp_path_factory.mktemp("reference")
            found[benchmark, spec] = reference(sys.executable, outdir, benchmark, spec, EPISODES,
                                               SEEDS)
    return found


@pytest.mark.parametrize("benchmark", sorted(LIGHT_BASELINES))
def test_baselines_next_to_the_env_give_dacbench_s_in_process_values(tmp_path, benchmark,
                                                                     references):
    with RemoteRunner(benchmark, runtime="local", results_path=tmp_path / "r.jsonl") as runner:
        for spec in LIGHT_BASELINES[benchmark]:
            for seed in SEEDS:
                run = runner.run_baseline(spec, EPISODES, seed)
                assert (run.benchmark_class, run.seed, len(run.episodes)) == (
                    benchmark, seed, EPISODES)
                run.write_logs(tmp_path / "ours")
                assert_same_as_reference(run, tmp_path / "ours", references[benchmark, spec])


def test_results_lines_say_the_agent_ran_next_to_the_env_and_repeat(tmp_path):
    results = tmp_path / "results.jsonl"
    with RemoteRunner("Luby", runtime="local", results_path=results) as runner:
        episodes = runner.run("dacbench:optimal", 2, seed=5)
    records = read_records(results)
    assert [r["return"] for r in records] == [e.return_ for e in episodes]
    for record in records:
        assert record["agent"] == "dacbench:optimal" and record["agent_rebuildable"]
        assert record["agent_side"] == "server (next to the env)"
        assert record["dacbench_agent"] == ("dacbench.agents.generic_agent.GenericAgent("
                                            "dacbench.envs.policies.optimal_luby.get_optimum)")
        assert (record["base_seed"], record["baseline_seed"], record["seed"]) == (5, 5, None)
        assert record["baseline_experiment"] == "optimal_5"
    outcome = repeat_run(results, results_path=tmp_path / "again.jsonl")
    assert outcome.identical and len(outcome.episodes) == 2


def test_without_a_seed_the_run_takes_the_benchmark_s_seed(tmp_path):
    with RemoteRunner("Luby", runtime="local", results_path=None) as runner:
        unseeded = runner.run_baseline("dacbench:random", 2)
        seeded = runner.run_baseline("dacbench:random", 2, seed=0)
    assert (unseeded.seed, unseeded.experiment_name) == (0, "random_0")
    assert [e.return_ for e in unseeded.episodes] == [e.return_ for e in seeded.episodes]


def test_steps_are_returned_when_asked_for(tmp_path):
    with RemoteRunner("FunctionApproximation", runtime="local", results_path=None) as runner:
        run = runner.run_baseline("dacbench:optimal", 2, seed=0, steps=True)
        plain = runner.run_baseline("dacbench:optimal", 2, seed=0)
    assert plain.steps is None
    assert len(run.steps) == 2
    for episode, steps in zip(run.episodes, run.steps, strict=True):
        assert len(steps["actions"]) == len(steps["rewards"]) == episode.length
        assert len(steps["observations"]) == episode.length + 1
        total = 0
        for reward in steps["rewards"]:
            total += reward
        assert float(total) == episode.return_
        assert set(steps["actions"][0]) == {"value_dim_1", "value_dim_2"}  # FA's Dict actions


def test_a_benchmark_the_host_cannot_place_is_refused_by_the_server(tmp_path):
    runner = RemoteRunner("dacbench.benchmarks:ToySGDBenchmark", runtime="local",
                          results_path=None)
    with runner, pytest.raises(BadConfig) as refused:
        runner.run("dacbench:optimal", 1)
    assert "not available for ToySGDBenchmark" in str(refused.value)
    assert "LubyBenchmark, FunctionApproximationBenchmark, FastDownwardBenchmark" in \
        str(refused.value)


def test_what_the_env_raises_comes_back_with_its_traceback(tmp_path):
    env = {"TMPDIR": str(tmp_path)}
    with RemoteRunner("Luby", runtime="local", env=env, results_path=None) as runner:
        with pytest.raises(RemoteError) as raised:
            runner.run("dacbench:static:[1, 2]", 1)  # Luby cannot take a list
        assert "run_benchmark" in raised.value.remote_traceback
        # The server goes on, and the failed run left no log directory behind.
        assert len(runner.run("dacbench:optimal", 1)) == 1
    assert not list(tmp_path.glob("dacbench-remote-baseline-*"))


def _stuck_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_cancels_the_run_in_the_server(tmp_path):
    env = {"TMPDIR": str(tmp_path)}

    def interrupt(episodes: int) -> None:
        raise KeyboardInterrupt

    with RemoteRunner("Luby", runtime="local", env=env, results_path=None) as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.run_baseline("dacbench:random", 10**7, seed=0, progress=interrupt)
        # The run stopped at its next step and removed its logs; the server serves on.
        assert not _stuck_until(lambda: not list(tmp_path.glob("dacbench-remote-baseline-*")))
        assert len(runner.run("dacbench:optimal", 1)) == 1


def test_a_server_killed_mid_run_is_a_server_crash_and_leaves_no_process(tmp_path):
    runner = RemoteRunner("Luby", runtime="local", results_path=tmp_path / "r.jsonl")

    def kill(episodes: int) -> None:
        os.kill(runner.server.process.pid, signal.SIGKILL)

    with runner:
        process = runner.server.process
        with pytest.raises(ServerCrashed, match="went away"):
            runner.run_baseline("dacbench:random", 10**7, seed=0, progress=kill)
    assert process.poll() is not None
    assert not (tmp_path / "r.jsonl").exists()
