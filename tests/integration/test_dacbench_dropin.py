"""RemoteRunner as a drop-in for DACBench's container runner: benchmark objects, its keywords,
get_environment/run semantics, DACBench's env interface, Logger and wrappers.

These use the local runtime (a plain server subprocess) so that they isolate the drop-in
behaviour; tests/integration/test_roadmap_container.py runs the same workflow in a container.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from dacbench_remote import BadConfig, RemoteRunner, RuntimeUnavailable
from dacbench_remote.host.results import read_run
from dacbench_remote.testing import assert_identical
from dacbench_remote.wire.dacvalues import lower
from tests.needs import need_module
from tests.roadmap_example import agent_creation_function, in_process, make_benchmark

pytestmark = pytest.mark.integration
dacbench = need_module("dacbench")

BENCHMARKS = ["FunctionApproximation", "Luby", "ToySGD"]


def remote_run(benchmark, episodes: int = 10, tmp_path: Path | None = None, **options):
    """The roadmap's workflow through the local runtime; returns (what the agent saw, records)."""
    results = (tmp_path or Path(os.getcwd())) / "results.jsonl"
    with RemoteRunner(benchmark, experiment_identifier="exp:0.01", runtime="local",
                      results_path=results, **options) as runner:
        agent = agent_creation_function(runner.get_environment())
        runner.run(agent, number_of_episodes=episodes)
        return agent.seen, read_run(results)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_object_equals_run_benchmark_in_process(name, tmp_path):
    benchmark = make_benchmark(name)
    benchmark.set_seed(42)
    seen, records = remote_run(benchmark, tmp_path=tmp_path)
    expected = in_process(name)
    assert len(seen) == len(expected) > 20
    assert_identical(expected, seen, path=name)
    assert len(records) == 10 and {r["base_seed"] for r in records} == {None}
    assert records[0]["benchmark_class"].endswith(f":{name}Benchmark")


def test_set_seed_is_not_overridden_by_run(tmp_path):
    """Two seeds must give different episodes: run() does not reseed behind set_seed's back.

    (ToySGD draws its instances' noise from the benchmark seed; FunctionApproximation and
    Luby with a fixed agent give the same episodes for any seed, in-process too.)
    """
    runs = []
    for seed in (1, 2):
        benchmark = make_benchmark("ToySGD")
        benchmark.set_seed(seed)
        runs.append(remote_run(benchmark, episodes=2, tmp_path=tmp_path)[0])
    rewards = [[float(s[2]) for s in run if s[0] == "train"] for run in runs]
    assert len(rewards[0]) == len(rewards[1]) > 5
    assert rewards[0] != rewards[1]


def test_edited_config_and_instance_set_equal_in_process(tmp_path):
    """Edits a DACBench user makes: config keys, an array, a trimmed instance set."""
    def configured():
        benchmark = make_benchmark("Luby")
        benchmark.set_seed(3)
        benchmark.config.cutoff = 40
        benchmark.config.reward_range = (-40, 0)
        benchmark.read_instance_set()
        first = sorted(benchmark.config.instance_set)[:1]
        benchmark.config.instance_set = {k: benchmark.config.instance_set[k] for k in first}
        benchmark.config.observation_space_args = [np.full(11, -1.0), np.full(11, 2.0 ** 10)]
        return benchmark

    seen, _ = remote_run(configured(), episodes=3, tmp_path=tmp_path)
    env = configured().get_environment()
    agent = agent_creation_function(env)
    from dacbench.runner import run_benchmark

    run_benchmark(env, agent, 3)
    assert_identical(agent.seen, seen, path="Luby(edited)")


def test_config_read_from_file_equals_in_process(tmp_path):
    """A hand-written config file (DACBench fills in the defaults it does not name)."""
    from dacbench.benchmarks import LubyBenchmark
    from dacbench.runner import run_benchmark

    path = tmp_path / "luby.json"
    path.write_text(json.dumps({"cutoff": 30, "seed": 5, "hist_length": 3,
                                "reward_range": [-30, 0]}))
    seen, _ = remote_run(LubyBenchmark(config_path=str(path)), episodes=3, tmp_path=tmp_path)
    env = LubyBenchmark(config_path=str(path)).get_environment()
    agent = agent_creation_function(env)
    run_benchmark(env, agent, 3)
    assert_identical(agent.seen, seen, path="Luby(file)")
    assert sum(1 for kind, *_ in seen if kind == "end") == 3


def test_config_that_cannot_cross_fails_on_the_host_naming_the_key():
    benchmark = make_benchmark("Luby")
    benchmark.config.my_callback = lambda x: x
    with pytest.raises(BadConfig) as info:
        RemoteRunner(benchmark, runtime="local")
    assert "my_callback" in str(info.value) and "function" in str(info.value)


def test_get_environment_is_one_env_that_run_uses(tmp_path):
    with RemoteRunner(make_benchmark("Luby"), runtime="local",
                      results_path=tmp_path / "r.jsonl") as runner:
        env = runner.get_environment()
        assert runner.get_environment() is env
        other = runner.make_environment()
        assert other is not env
        agent = agent_creation_function(env)
        runner.run(agent, 2)
        steps_after_run = env.c_step
        assert steps_after_run > 0  # run stepped the very env the agent was built from
        assert other.c_step == 0


def test_explicit_seed_resets_episode_i_with_seed_plus_i(tmp_path):
    with RemoteRunner("Luby", runtime="local", results_path=tmp_path / "r.jsonl") as runner:
        results = runner.run("random", 3, seed=10)
    assert [r.seed for r in results] == [10, 11, 12]
    assert [r["seed"] for r in read_run(tmp_path / "r.jsonl")] == [10, 11, 12]


def test_results_go_to_the_default_file_and_read_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RemoteRunner("Luby", runtime="local") as runner:
        results = runner.run("random", 2, seed=0)
        path = runner.results_path
    assert path == Path("results") / "results.jsonl"
    records = read_run(tmp_path / path)
    assert [r["return"] for r in records] == [r.return_ for r in results]
    assert records[0]["runtime"] == "local" and records[0]["run_id"] == results[0].provenance["run_id"]


def test_dacbench_env_interface_matches_in_process():
    """Instance ids and sets, train/test split, seed and attributes, as DAC experiments use them."""
    local = make_benchmark("FunctionApproximation").get_environment()
    with RemoteRunner(make_benchmark("FunctionApproximation"), runtime="local",
                      results_path=None) as runner:
        remote = runner.get_environment()
        for env in (local, remote):
            env.seed(3)
            env.reset()
        assert remote.get_inst_id() == local.get_inst_id()
        # DACBench's toy functions have no __eq__: compare class and attributes, exactly.
        same(local.get_instance_set(), remote.get_instance_set(), "instance_set")
        same(local.instance, remote.instance, "instance")
        same(local.get_instance(), remote.get_instance(), "get_instance")
        assert type(remote.instance) is type(local.instance)
        for env in (local, remote):
            env.set_inst_id(2)
            env.use_next_instance()
        assert remote.get_inst_id() == local.get_inst_id() != 0
        for env in (local, remote):
            env.use_test_set()
            env.reset()
        assert remote.get_inst_id() == local.get_inst_id()
        same(local.instance, remote.instance, "test instance")
        for env in (local, remote):
            env.use_training_set()
            env.set_instance(local.get_instance_set()[5])
            env.reset()
        same(local.instance, remote.instance, "set_instance")
        assert remote.c_step == local.c_step == 0
        remote.c_step = 4  # attribute writes reach the remote env
        assert remote.c_step == 4
        with pytest.raises(AttributeError, match="no_such_attribute"):
            remote.no_such_attribute  # noqa: B018
        assert not hasattr(remote, "no_such_attribute")


def same(expected, got, path: str) -> None:
    assert_identical(lower(expected), lower(got), path=path)


def _logged(root: Path) -> dict[str, list]:
    """Every record the Logger wrote, without its wall-clock times."""
    out = {}
    for file in sorted(root.rglob("*.jsonl")):
        rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        for row in rows:
            for key in [k for k in row if "time" in k]:
                del row[key]
        out[file.relative_to(root).as_posix()] = rows
    return out


def _logged_run(env, directory: Path, test_set: bool) -> tuple[dict, list]:
    from dacbench.logger import Logger
    from dacbench.runner import run_benchmark
    from dacbench.wrappers import PerformanceTrackingWrapper, StateTrackingWrapper

    if test_set:
        env.use_test_set()
    logger = Logger(experiment_name="exp", output_path=directory)
    performance = logger.add_module(PerformanceTrackingWrapper)
    states = logger.add_module(StateTrackingWrapper)
    wrapped = StateTrackingWrapper(
        PerformanceTrackingWrapper(env, performance_interval=2, logger=performance), logger=states)
    logger.set_env(wrapped)
    agent = agent_creation_function(wrapped)
    run_benchmark(wrapped, agent, 4, logger)
    logger.close()
    return _logged(directory), wrapped.env.get_performance()


@pytest.mark.parametrize("test_set", [False, True], ids=["training", "test-set"])
def test_logger_and_wrappers_on_a_remote_env_match_in_process(tmp_path, test_set):
    def benchmark():
        made = make_benchmark("FunctionApproximation")
        made.set_seed(11)
        return made

    expected, expected_performance = _logged_run(benchmark().get_environment(),
                                                 tmp_path / "local", test_set)
    with RemoteRunner(benchmark(), runtime="local", results_path=None) as runner:
        got, performance = _logged_run(runner.get_environment(), tmp_path / "remote", test_set)
    assert expected and sum(len(rows) for rows in expected.values()) > 10
    assert got == expected
    # The per-instance table is keyed by str() of DACBench's toy functions, which holds object
    # addresses (different in any two processes); its values must match.
    assert_identical(expected_performance[:2], performance[:2], path="get_performance")
    assert_identical(list(expected_performance[2].values()), list(performance[2].values()),
                     path="instance_performances")


# -- DACBench's keywords ----------------------------------------------------------------------


def test_experiment_and_experiment_identifier_must_agree():
    with pytest.raises(BadConfig, match="same setting"):
        RemoteRunner("Luby", experiment="exp:0.01", experiment_identifier="exp:0.02")
    assert RemoteRunner("Luby", experiment_identifier="exp:0.01").experiment == "exp:0.01"


def test_container_tag_names_the_experiment_version():
    assert RemoteRunner("Luby", container_tag="0.01").experiment == "0.01"
    assert RemoteRunner("Luby", container_tag="latest").experiment is None
    with pytest.raises(BadConfig, match="disagree"):
        RemoteRunner("Luby", container_tag="0.02", experiment_identifier="exp:0.01")
    with pytest.raises(BadConfig, match="local file"):
        RemoteRunner("Luby", container_source="/tmp/x.sif", container_tag="0.01")


def test_container_source_url_unknown_to_the_catalog_is_refused(tmp_path):
    runner = RemoteRunner("Luby", container_source="https://example.invalid/luby.sif",
                          runtime="bwrap")
    with pytest.raises(BadConfig, match="no sha256 to verify"):
        runner.start()


def test_env_str_and_bind_str_are_parsed_and_honoured_or_refused(tmp_path):
    runner = RemoteRunner("Luby", env_str="A=1,B=x=y", bind_str="/tmp:/mnt:ro, /var/tmp")
    assert runner.env == {"A": "1", "B": "x=y"}
    assert runner.binds == ("/tmp:/mnt:ro", "/var/tmp")
    with pytest.raises(BadConfig, match="VAR=VALUE"):
        RemoteRunner("Luby", env_str="JUSTANAME")
    # The local runtime has no container to bind into: it says so instead of ignoring it.
    with pytest.raises(BadConfig, match="does not support binds"):
        RemoteRunner("Luby", runtime="local", bind_str="/tmp").start()
    with pytest.raises(BadConfig, match="does not support gpu"):
        RemoteRunner("Luby", runtime="local", gpu=True).start()


def test_env_str_reaches_the_server(tmp_path):
    with RemoteRunner("tests.envs:make_environ_env", runtime="local", env_str="DR_PROBE=42",
                      results_path=None) as runner:
        env = runner.get_environment()
        _, info = env.reset()
    assert info["DR_PROBE"] == "42"


def test_socket_id_attaches_to_a_running_server(tmp_path):
    with RemoteRunner("Luby", runtime="local", results_path=None) as owner:
        owner.start()
        assert owner.socket_id
        guest = RemoteRunner(make_benchmark("Luby"), socket_id=owner.socket_id, results_path=None)
        env = guest.get_environment()
        obs, _ = env.reset(seed=0)
        assert env.step(env.action_space.sample())[0].shape == obs.shape
        guest.close()
        # The guest did not own the server: the owner's env still works.
        own = owner.get_environment()
        own.reset(seed=0)
        assert owner.server.alive()
    with pytest.raises(BadConfig, match="running server"):
        RemoteRunner("Luby", socket_id="srv-00000000", runtime="bwrap")


def test_default_runtime_is_a_container_and_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("DACBENCH_REMOTE_RUNTIME", raising=False)
    (tmp_path / "empty.toml").write_text("# defaults only\n")
    monkeypatch.setenv("DACBENCH_REMOTE_CONFIG", str(tmp_path / "empty.toml"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no apptainer, singularity or bwrap here
    runner = RemoteRunner("Luby")
    assert runner.runtime_spec == "auto"
    with pytest.raises(RuntimeUnavailable) as info:
        runner.start()
    message = str(info.value)
    assert "bubblewrap" in message and "Apptainer" in message and "runtime='local'" in message


def test_container_name_must_be_the_benchmarks_image_family():
    """DACBench's container_name picks the catalog family; a family without the benchmark is refused."""
    with pytest.raises(BadConfig, match="dacbench-base"):
        RemoteRunner("Luby", container_name="dacbench-cmaes", runtime="bwrap", build=False).start()
