"""The sweep spec, trial ids, tables, report and status, on files only (no processes started)."""

from __future__ import annotations

import builtins
import hashlib
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dacbench_remote.errors import BadConfig, DacbenchRemoteError, SweepAlreadyRunning
from dacbench_remote.runtimes.options import RuntimeOptions
from dacbench_remote.sweeps import (
    SweepDir,
    Trial,
    TrialOutcome,
    load_spec,
    parse_spec,
    read_results_csv,
    report,
    run_sweep,
    status,
)
from dacbench_remote.sweeps.driver import make_executor
from dacbench_remote.sweeps.executors import EXECUTORS
from dacbench_remote.sweeps.journal import JournalWriter
from dacbench_remote.sweeps.prefetch import prefetch_images
from dacbench_remote.sweeps.slurm_executor import SlurmExecutor
from dacbench_remote.sweeps.spec import LocalOptions, SlurmOptions
from dacbench_remote.sweeps.sweepdir import atomic_write_json, read_jsonl
from dacbench_remote.sweeps.tables import RESULT_COLUMNS, write_tables
from tests.needs import need_module

FULL = """
name = "demo"
episodes = 4
time_limit = "10m"
retries = 2

[runtime]
kind = "bwrap"
binds = ["/data:/data:ro"]
env = { OMP_NUM_THREADS = "1" }

[grid]
agents = ["random", "static:1"]
seeds = { start = 10, count = 3 }

[[grid.benchmarks]]
benchmark = "Luby"
experiments = ["v1", "v2"]
config = { cutoff = 50 }
[grid.benchmarks.vary]
seed_offset = [0, 1]

[[grid.benchmarks]]
benchmark = "gymnasium:CartPole-v1"
episodes = 2
time_limit = 30
retries = 0
image = "images/cartpole.sif"

[[trials]]
benchmark = "tests.envs:make_slow_env"
kwargs = { delay = 0.5 }
agent = "random"
seeds = [7, 8]

[executor]
kind = "slurm"
[executor.local]
workers = 3
[executor.slurm]
partition = "debug"
time = "1:30:00"
mem_gb = 2
gres = "gpu:1"
array_parallelism = 4
cache_dir = "cache"
additional = { exclusive = true }
"""


def spec_from(text: str, tmp_path: Path | None = None):
    path = (tmp_path or Path("/tmp")) / "sweep.toml"
    return parse_spec(textwrap.dedent(text), path)


def test_full_spec_expands_grid_and_explicit_trials(tmp_path: Path):
    spec = spec_from(FULL, tmp_path)
    # Luby: 2 experiments x 2 config variants x 2 agents x 3 seeds; CartPole: 2 x 3; explicit: 2.
    assert len(spec.trials) == 24 + 6 + 2
    assert spec.name == "demo"
    assert spec.dir == tmp_path / "demo"
    luby = [t for t in spec.trials if t.benchmark == "Luby"]
    assert {t.experiment for t in luby} == {"v1", "v2"}
    assert {json.dumps(t.config, sort_keys=True) for t in luby} == {
        '{"cutoff": 50, "seed_offset": 0}', '{"cutoff": 50, "seed_offset": 1}'}
    assert {t.seed for t in luby} == {10, 11, 12}
    assert all(t.episodes == 4 and t.time_limit == 600.0 and t.retries == 2 for t in luby)
    assert all(t.runtime.kind == "bwrap" and t.runtime.binds == ("/data:/data:ro",) for t in luby)
    cartpole = [t for t in spec.trials if t.benchmark == "gymnasium:CartPole-v1"]
    assert all(t.episodes == 2 and t.time_limit == 30.0 and t.retries == 0 for t in cartpole)
    assert all(t.runtime.image == str(tmp_path / "images/cartpole.sif") for t in cartpole)
    explicit = [t for t in spec.trials if t.benchmark.startswith("tests.envs")]
    assert [t.seed for t in explicit] == [7, 8]
    assert explicit[0].kwargs == {"delay": 0.5}
    slurm = spec.executor.slurm
    assert spec.executor.kind == "slurm" and spec.executor.local.workers == 3
    assert spec.executor.local.warm is True  # the default
    assert (slurm.partition, slurm.time, slurm.mem_gb, slurm.gres) == ("debug", 90, 2, "gpu:1")
    assert slurm.cache_dir == str(tmp_path / "cache")
    assert len({t.id for t in spec.trials}) == len(spec.trials)


def test_trial_id_is_stable_and_depends_only_on_result_defining_parameters():
    trial = Trial("gymnasium:CartPole-v1", "random", 0, 3)
    # The documented formula: sha256 of the canonical JSON of the parameters, first 12 hex
    # digits. Changing it must be deliberate: it orphans every recorded result.
    canonical = ('{"agent":"random","benchmark":"gymnasium:CartPole-v1","config":{},"episodes":3,'
                 '"experiment":null,"kwargs":{},"seed":0,"v":1}')
    assert trial.id == hashlib.sha256(canonical.encode()).hexdigest()[:12] == "10c55b288a1e"
    same = Trial("gymnasium:CartPole-v1", "random", 0, 3, time_limit=5, retries=3,
                 runtime=RuntimeOptions(kind="bwrap", image="/x.sif"))
    assert same.id == trial.id
    for other in (Trial("gymnasium:CartPole-v1", "random", 1, 3),
                  Trial("gymnasium:CartPole-v1", "static", 0, 3),
                  Trial("gymnasium:CartPole-v1", "random", 0, 4),
                  Trial("gymnasium:CartPole-v1", "random", 0, 3, experiment="v1"),
                  Trial("gymnasium:CartPole-v1", "random", 0, 3, kwargs={"a": 1}),
                  Trial("gymnasium:CartPole-v0", "random", 0, 3)):
        assert other.id != trial.id
    # Key order in config tables does not matter.
    assert (Trial("Luby", "random", 0, 1, config={"a": 1, "b": 2}).id
            == Trial("Luby", "random", 0, 1, config={"b": 2, "a": 1}).id)


def test_trial_round_trips_through_json():
    trial = Trial("Luby", "static:[1]", 3, 2, experiment="v1", config={"c": [1, 2]},
                  time_limit=12.5, runtime=RuntimeOptions(kind="bwrap", binds=("/a:/b",),
                                                          env={"X": "1"}))
    again = Trial.from_dict(json.loads(json.dumps(trial.to_dict())))
    assert again == trial and again.id == trial.id


def test_same_spec_in_two_places_gives_the_same_ids(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = spec_from(FULL, tmp_path / "a"), spec_from(FULL, tmp_path / "b")
    images = {t.runtime.image for t in a.trials} ^ {t.runtime.image for t in b.trials}
    assert images == {str(tmp_path / d / "images/cartpole.sif") for d in "ab"}  # paths differ,
    assert [t.id for t in a.trials] == [t.id for t in b.trials]  # the ids do not


MINIMAL = """
name = "m"
[grid]
benchmarks = ["gymnasium:CartPole-v1"]
agents = ["random"]
seeds = [0]
"""

# (spec text, key named in the error, words of the problem)
INVALID = [
    ("name = ", "sweep.toml", "not valid TOML"),
    ('[grid]\nbenchmarks = ["Luby"]\nagents = ["random"]\nseeds = [0]', "name", "is required"),
    ('name = "a b"', "name", "must be letters"),
    ('name = "x"\ncolour = 1', "colour", "unknown key"),
    ('name = "x"\nepisodes = 0', "episodes", "at least 1"),
    ('name = "x"\nepisodes = "3"', "episodes", "must be an integer"),
    ('name = "x"\ntime_limit = "soon"', "time_limit", "positive duration"),
    ('name = "x"\ntime_limit = -5', "time_limit", "positive duration"),
    ('name = "x"', "grid", "defines no trials"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nseeds = [0]', "grid.agents", "is required"),
    ('name = "x"\n[grid]\nbenchmarks = []\nagents = ["random"]\nseeds = [0]',
     "grid.benchmarks", "non-empty array"),
    ('name = "x"\n[grid]\nbenchmarks = [3]\nagents = ["random"]\nseeds = [0]',
     "grid.benchmarks[0]", "a benchmark name or a table"),
    ('name = "x"\n[grid]\nbenchmarks = ["Lu by"]\nagents = ["random"]\nseeds = [0]',
     "grid.benchmarks[0].benchmark", "is not a DACBench benchmark name"),
    ('name = "x"\n[grid]\nbenchmarks = ["gymnasium:"]\nagents = ["random"]\nseeds = [0]',
     "grid.benchmarks[0].benchmark", "names no gymnasium environment"),
    ('name = "x"\n[grid]\nbenchmarks = ["pkg.mod:"]\nagents = ["random"]\nseeds = [0]',
     "grid.benchmarks[0].benchmark", "is not 'package.module:factory'"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = []\nseeds = [0]',
     "grid.agents", "non-empty array of agent specs"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["clever"]\nseeds = [0]',
     "grid.agents[0]", "is not an agent"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["static:{oops"]\nseeds = [0]',
     "grid.agents[0]", "not valid JSON"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["no_such_module_xyz:make"]\n'
     'seeds = [0]', "grid.agents[0]", "is not importable"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["random", "random"]\nseeds = [0]',
     "grid.agents", "repeats an agent"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["random"]\nseeds = []',
     "grid.seeds", "non-empty array"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["random"]\nseeds = [0, 1.5]',
     "grid.seeds", "must be an integer"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["random"]\nseeds = [1, 1]',
     "grid.seeds", "repeats a seed"),
    ('name = "x"\n[grid]\nbenchmarks = ["Luby"]\nagents = ["random"]\nseeds = {start = 3}',
     "grid.seeds.count", "is required"),
    ('name = "x"\n[grid]\nagents = ["random"]\nseeds = [0]\n[[grid.benchmarks]]\n'
     'benchmark = "Luby"\nexperiment = "a"\nexperiments = ["b"]',
     "grid.benchmarks[0].experiments", "either experiment or experiments"),
    ('name = "x"\n[grid]\nagents = ["random"]\nseeds = [0]\n[[grid.benchmarks]]\n'
     'benchmark = "Luby"\nconfig = 5', "grid.benchmarks[0].config", "must be a table"),
    ('name = "x"\n[grid]\nagents = ["random"]\nseeds = [0]\n[[grid.benchmarks]]\n'
     'benchmark = "Luby"\nconfig = { cutoff = nan }', "grid.benchmarks[0].config.cutoff",
     "no nan/inf"),
    ('name = "x"\n[grid]\nagents = ["random"]\nseeds = [0]\n[[grid.benchmarks]]\n'
     'benchmark = "Luby"\nconfig = { when = 2024-01-01 }', "grid.benchmarks[0].config.when",
     "date values are not supported"),
    ('name = "x"\n[grid]\nagents = ["random"]\nseeds = [0]\n[[grid.benchmarks]]\n'
     'benchmark = "Luby"\nvary = { cutoff = 5 }', "grid.benchmarks[0].vary.cutoff",
     "non-empty array of values"),
    ('name = "x"\n[grid]\nagents = ["random"]\nseeds = [0]\n[[grid.benchmarks]]\n'
     'benchmark = "Luby"\nconfig = { cutoff = 5 }\nvary = { cutoff = [1, 2] }',
     "grid.benchmarks[0].vary.cutoff", "also set as a fixed value"),
    ('name = "x"\n[grid]\nagents = ["random"]\nseeds = [0]\n[[grid.benchmarks]]\n'
     'benchmark = "Luby"\ninstance = 3', "grid.benchmarks[0].instance", "unknown key"),
    (MINIMAL + '[runtime]\nkind = "docker"', "runtime.kind", "is not a runtime"),
    (MINIMAL + '[runtime]\nbinds = ["/a:/b:maybe"]', "runtime.binds", "is not 'SRC[:DST"),
    (MINIMAL + '[runtime]\nenv = { THREADS = 1 }', "runtime.env.THREADS", "must be a string"),
    (MINIMAL + '[runtime]\ngpu = "yes"', "runtime.gpu", "true or false"),
    (MINIMAL + '[runtime]\nimage = ""', "runtime.image", "non-empty string"),
    (MINIMAL + '[runtime]\nnetwork = true', "runtime.network", "unknown key"),
    (MINIMAL + '[executor]\nkind = "kubernetes"', "executor.kind", "is not an executor"),
    (MINIMAL + '[executor.local]\nworkers = 0', "executor.local.workers", "at least 1"),
    (MINIMAL + '[executor.local]\nwarm = "no"', "executor.local.warm", "true or false"),
    (MINIMAL + '[executor.slurm]\nmem_gb = -1', "executor.slurm.mem_gb", "positive number"),
    (MINIMAL + '[executor.slurm]\ntime = "forever"', "executor.slurm.time", "positive duration"),
    (MINIMAL + '[executor.slurm]\nnodes = 2', "executor.slurm.nodes", "unknown key"),
    (MINIMAL + '[executor.slurm]\nadditional = { x = [1] }', "executor.slurm.additional.x",
     "string, number or boolean"),
    (MINIMAL + '[[trials]]\nbenchmark = "gymnasium:CartPole-v1"\nagent = "random"\nseed = 0',
     "trials", "same trial"),
    (MINIMAL + '[[trials]]\nbenchmark = "Luby"', "trials[0].agent", "is required"),
    (MINIMAL + '[[trials]]\nbenchmark = "Luby"\nagent = "random"\nseed = 1\nseeds = [2]',
     "trials[0].seeds", "either seed or seeds"),
    (MINIMAL + '[[trials]]\nagent = "random"', "trials[0].benchmark", "is required"),
]


@pytest.mark.parametrize(("text", "key", "problem"), INVALID,
                         ids=[f"{i}-{case[1]}" for i, case in enumerate(INVALID)])
def test_invalid_spec_names_key_and_problem(text: str, key: str, problem: str):
    with pytest.raises(BadConfig) as info:
        spec_from(text)
    message = str(info.value)
    assert message.startswith("sweep.toml: ")
    assert f" {key}: " in message or message.startswith(f"{key}: "), message
    assert problem in message, message


def test_missing_spec_file_is_named(tmp_path: Path):
    with pytest.raises(BadConfig, match=r"nope\.toml does not exist"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize(("value", "seconds"), [
    (90, 90.0), (1.5, 1.5), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0),
    ("01:30:00", 5400.0), ("1-00:00:00", 86400.0), ("05:30", 330.0),
])
def test_time_limits_accept_seconds_units_and_slurm_clock(value, seconds: float):
    text = f"time_limit = {json.dumps(value)}\n" + MINIMAL
    assert spec_from(text).trials[0].time_limit == seconds


def test_run_sweep_rejects_unknown_executor_and_bad_workers(tmp_path: Path):
    path = tmp_path / "sweep.toml"
    path.write_text(MINIMAL)
    with pytest.raises(BadConfig, match="executor 'k8s' is not known"):
        run_sweep(path, executor="k8s")
    with pytest.raises(BadConfig, match="workers must be a positive integer, got 0"):
        run_sweep(path, workers=0)
    assert not (tmp_path / "m").exists()  # nothing started, nothing written


def test_status_and_report_name_a_directory_that_is_not_a_sweep(tmp_path: Path):
    for function in (status, report):
        with pytest.raises(BadConfig, match="is not a sweep directory"):
            function(tmp_path)


# -- tables, report and status on a hand-made sweep directory --------------------------------


def fake_sweep(tmp_path: Path) -> tuple[SweepDir, list[Trial]]:
    """Four trials: two done (known returns), one failed, one never finished."""
    layout = SweepDir(tmp_path / "sw")
    trials = [Trial("gymnasium:CartPole-v1", "random", seed, 3) for seed in (0, 1, 2, 3)]
    layout.write_trials(trials)
    journal = JournalWriter(layout.journal_dir, "run1")
    returns = {trials[0].id: [1.0, 2.0, 3.0], trials[1].id: [4.0, 5.0, 6.0]}
    for trial_id, values in returns.items():
        rows = [{"trial_id": trial_id, "episode": i, "return": r, "length": 10,
                 "benchmark": "gymnasium:CartPole-v1", "agent": "random"}
                for i, r in enumerate(values)]
        journal.add(TrialOutcome(trial_id, "done", "run1", 3, statistics.fmean(values)), rows)
    journal.add(TrialOutcome(trials[2].id, "failed", "run1",
                             error="RemoteError: ValueError: bad action"), [])
    journal.close()
    return layout, trials


def test_tables_hold_every_episode_of_done_trials_and_every_trial(tmp_path: Path):
    layout, trials = fake_sweep(tmp_path)
    write_tables(layout)
    rows = read_results_csv(layout.results_csv)
    assert [(r["trial_id"], r["episode"], r["return"]) for r in rows] == [
        (trials[0].id, 0, 1.0), (trials[0].id, 1, 2.0), (trials[0].id, 2, 3.0),
        (trials[1].id, 0, 4.0), (trials[1].id, 1, 5.0), (trials[1].id, 2, 6.0)]
    statuses = [line.split(",")[8] for line in layout.trials_csv.read_text().splitlines()[1:]]
    assert statuses == ["done", "done", "failed", "pending"]


def test_report_summarises_returns_counts_and_failures(tmp_path: Path):
    need_module("matplotlib")
    layout, trials = fake_sweep(tmp_path)
    result = report(layout.path)
    assert result.counts == {"total": 4, "done": 2, "failed": 1, "pending": 1}
    [row] = result.rows
    assert (row.benchmark, row.agent, row.trials, row.episodes) == (
        "gymnasium:CartPole-v1", "random", 2, 6)
    assert row.mean_return == pytest.approx(3.5)
    assert row.std_return == pytest.approx(statistics.stdev([1, 2, 3, 4, 5, 6]))
    assert result.plot == layout.plot and layout.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = str(result)
    assert "4 total, 2 done, 1 failed, 0 timed out, 1 not finished" in text
    assert "RemoteError: ValueError: bad action" in text
    assert trials[2].id in text


def test_report_without_matplotlib_says_how_to_get_the_plot(tmp_path: Path, monkeypatch):
    layout, _ = fake_sweep(tmp_path)
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = report(layout.path)
    assert result.plot is None and not layout.plot.exists()
    assert "matplotlib is not installed" in str(result) and "pip install matplotlib" in str(result)
    assert result.rows  # the summary does not depend on matplotlib


def test_status_counts_finished_and_waiting_trials(tmp_path: Path):
    layout, _ = fake_sweep(tmp_path)
    result = status(layout.path)
    assert result.counts == {"total": 4, "done": 2, "failed": 1, "pending": 1}
    assert ("3/4 trials finished (2 done, 1 failed, 0 timed out), 0 running, 1 waiting"
            in str(result))
    assert result.driver == "not running"


def test_stale_running_file_of_a_dead_process_is_not_counted_as_running(tmp_path: Path):
    layout, trials = fake_sweep(tmp_path)
    from dacbench_remote._sys.procfs import boot_id, hostname

    atomic_write_json(layout.running_file(trials[3].id), {
        "host": hostname(), "boot_id": boot_id(),
        "processes": [{"pid": 999999999, "start": 1}]})
    assert status(layout.path).counts.get("running", 0) == 0


def test_incomplete_jsonl_line_is_ignored(tmp_path: Path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


# -- executors' plumbing ---------------------------------------------------------------------


def test_images_are_fetched_once_per_benchmark_and_experiment_and_pinned():
    calls = []

    def fetch(benchmark, experiment):
        calls.append((benchmark, experiment))
        return f"/cache/{benchmark}-{experiment}.sif", {"sha256": f"{experiment}" * 8}

    bwrap = RuntimeOptions(kind="bwrap")
    trials = [Trial("Luby", "random", s, 1, experiment="v1", runtime=bwrap) for s in range(3)]
    trials += [Trial("Luby", "random", 0, 1, experiment="v2", runtime=bwrap)]
    trials += [Trial("gymnasium:CartPole-v1", "random", 0, 1, runtime=RuntimeOptions("local"))]
    trials += [Trial("Luby", "static", 0, 1, runtime=bwrap.replace(image="/mine.sif"))]
    pinned = prefetch_images(trials, fetch)
    assert calls == [("Luby", "v1"), ("Luby", "v2")]
    assert [t.runtime.image for t in pinned] == [
        "/cache/Luby-v1.sif"] * 3 + ["/cache/Luby-v2.sif", None, "/mine.sif"]
    assert pinned[3].runtime.provenance == {"sha256": "v2" * 8}  # recorded in results rows
    assert [t.id for t in pinned] == [t.id for t in trials]


def test_missing_image_for_a_container_runtime_stops_the_sweep_before_it_starts():
    def fetch(benchmark, experiment):
        raise DacbenchRemoteError(f"no image for {benchmark}")

    for kind in ("bwrap", "apptainer", "auto"):
        trial = Trial("Luby", "random", 0, 1, runtime=RuntimeOptions(kind))
        with pytest.raises(DacbenchRemoteError, match="no image for Luby"):
            prefetch_images([trial], fetch)


def test_every_executor_name_makes_the_executor_of_that_name():
    for kind in EXECUTORS:
        executor = make_executor(kind, LocalOptions(), SlurmOptions())
        assert executor.name == kind
        assert type(executor).__module__ == f"dacbench_remote.sweeps.{kind}_executor"
    with pytest.raises(BadConfig, match="use one of local, slurm"):
        make_executor("cloud", LocalOptions(), SlurmOptions())


def test_slurm_parameters_follow_the_spec():
    trials = [Trial("Luby", "random", s, 1, time_limit=600) for s in range(10)]
    options = SlurmOptions(partition="gpu", cpus_per_task=2, mem_gb=4, gres="gpu:1",
                           array_parallelism=3, setup=("module load x",),
                           additional={"exclusive": True})
    params = SlurmExecutor(options).parameters(trials, "demo")
    assert params == {
        "name": "dacbr-demo", "timeout_min": 15, "cpus_per_task": 2,
        "slurm_array_parallelism": 3, "slurm_partition": "gpu", "mem_gb": 4,
        "slurm_gres": "gpu:1", "slurm_setup": ["module load x"],
        "slurm_additional_parameters": {"exclusive": True},
    }
    assert SlurmExecutor(SlurmOptions(time=7)).parameters(trials, "d")["timeout_min"] == 7


def test_slurm_refuses_to_start_while_an_earlier_array_still_runs(tmp_path: Path, monkeypatch):
    import dacbench_remote.sweeps.slurm_executor as slurm

    layout = SweepDir(tmp_path)
    layout.add_job_id("4242")
    monkeypatch.setattr(slurm, "live_tasks", lambda job_id: ["4242_0", "4242_3"])
    with pytest.raises(SweepAlreadyRunning) as info:
        SlurmExecutor()._refuse_if_running(layout)
    message = str(info.value)
    assert "Slurm job 4242" in message and "2 task(s) queued or running" in message
    assert f"sweep cancel {layout.path}" in message


def test_parquet_table_matches_the_csv_when_pyarrow_is_installed(tmp_path: Path):
    parquet = need_module("pyarrow.parquet")  # optional for users, installed for the tests
    layout, _ = fake_sweep(tmp_path)
    assert layout.results_parquet in write_tables(layout)
    table = parquet.read_table(layout.results_parquet).to_pylist()
    csv_rows = read_results_csv(layout.results_csv)
    assert [r["return"] for r in table] == [r["return"] for r in csv_rows]


def odd_values_sweep(tmp_path: Path) -> tuple[SweepDir, list[dict]]:
    """One done trial whose rows hold what JSON and the columns make hard: NaN and infinite
    returns, nulls, an int where a float goes, non-ASCII text, an extra key."""
    layout = SweepDir(tmp_path / "odd")
    trial = Trial("gymnasium:CartPole-v1", "random", 0, 3)
    layout.write_trials([trial])
    base = {"sweep": "s", "run_id": "r", "trial_id": trial.id, "benchmark": "b\u00e9\u2603",
            "experiment": None, "config": "{}", "kwargs": "{}", "agent": "random", "seed": 0,
            "episode_seed": None, "length": 7, "wall_time": 0.25, "terminated": True,
            "truncated": False, "runtime": "local", "image_sha256": None, "host": "h",
            "instance": [1, 2]}
    rows = [{**base, "episode": 0, "return": float("nan")},
            {**base, "episode": 1, "return": float("-inf"), "terminated": False},
            {**base, "episode": 2, "return": 3, "episode_seed": 5}]
    journal = JournalWriter(layout.journal_dir, "run1")
    journal.add(TrialOutcome(trial.id, "done", "run1", 3, 0.0), rows)
    journal.close()
    return layout, rows


WRITE_TABLES_WITHOUT_PANDAS = """
import json, sys
from dacbench_remote.sweeps import SweepDir, write_tables
written = write_tables(SweepDir(sys.argv[1]))
print(json.dumps({"written": [p.name for p in written], "pandas": "pandas" in sys.modules}))
"""


def test_parquet_holds_the_journal_values_with_fixed_types_and_is_written_without_pandas(
        tmp_path: Path):
    """pyarrow imports pandas (0.3-0.4 s) to build arrays from Python objects; the table is
    parsed from JSON instead. Compared with the rows as the journal holds them."""
    parquet = need_module("pyarrow.parquet")
    layout, rows = odd_values_sweep(tmp_path)
    done = subprocess.run([sys.executable, "-c", WRITE_TABLES_WITHOUT_PANDAS, str(layout.path)],
                          capture_output=True, text=True, timeout=120, check=True)
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer == {"written": ["results.csv", "trials.csv", "results.parquet"],
                      "pandas": False}
    table = parquet.read_table(layout.results_parquet)
    assert table.column_names == RESULT_COLUMNS
    types = {name: str(table.schema.field(name).type) for name in RESULT_COLUMNS}
    assert types["seed"] == types["episode_seed"] == types["length"] == "int64"
    assert types["return"] == types["wall_time"] == "double"
    assert types["terminated"] == "bool" and types["experiment"] == "string"
    got = table.to_pylist()
    for row, expected in zip(got, rows, strict=True):
        want = {k: expected.get(k) for k in RESULT_COLUMNS}
        want["return"] = float(want["return"])  # the column's type: 3 is read back as 3.0
        assert json.dumps(row, sort_keys=True) == json.dumps(want, sort_keys=True)  # NaN too
        assert [type(row[k]) for k in ("return", "seed", "terminated")] == [float, int, bool]


def test_a_value_of_another_type_than_its_column_still_gets_a_parquet_table(tmp_path: Path):
    parquet = need_module("pyarrow.parquet")
    layout, _ = fake_sweep(tmp_path)
    journal = JournalWriter(layout.journal_dir, "odd")
    trials = layout.trials()
    journal.add(TrialOutcome(trials[3].id, "done", "odd", 1, 1.0),
                [{"trial_id": trials[3].id, "episode": 0, "return": 1.0, "seed": "seven"}])
    journal.close()
    assert layout.results_parquet in write_tables(layout)
    seeds = parquet.read_table(layout.results_parquet).column("seed").to_pylist()
    assert seeds[-1] == "seven" and len(seeds) == 7


REPORT_IN_A_FRESH_PROCESS = """
import json, os, sys, threading
from dacbench_remote.sweeps import report
forks = []
real_fork = os.fork
def counting_fork():
    pid = real_fork()
    forks.append(pid)
    return pid
os.fork = counting_fork
if sys.argv[2] == "thread":  # another thread runs: a fork would copy only this one
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
try:
    result = report(sys.argv[1])
    outcome = {"plot": str(result.plot), "notes": result.notes}
except Exception as exc:
    outcome = {"error": f"{type(exc).__name__}: {exc}"}
try:
    os.waitpid(-1, os.WNOHANG)
    children = True
except ChildProcessError:
    children = False
print(json.dumps({**outcome, "forks": len(forks), "children_left": children}))
"""


DRAW_IN_PLACE = """
import sys
from pathlib import Path
from dacbench_remote.sweeps import SweepDir
from dacbench_remote.sweeps.reporting import plot_returns
from dacbench_remote.sweeps.tables import episode_rows
layout = SweepDir(sys.argv[1])
trials = layout.trials()
plot_returns(episode_rows(layout, trials), {t.id: t for t in trials}, Path(sys.argv[2]))
"""


def run_report_in_a_fresh_process(path: Path, mode: str = "") -> dict:
    done = subprocess.run([sys.executable, "-c", REPORT_IN_A_FRESH_PROCESS, str(path), mode],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_report_draws_its_plot_in_a_forked_process_pixel_for_pixel_as_here(tmp_path: Path):
    """The plot process imports matplotlib while the report reads the journal and writes the
    tables; its PNG is byte for byte the one plot_returns draws from the same rows."""
    need_module("matplotlib")
    layout, _ = fake_sweep(tmp_path)
    answer = run_report_in_a_fresh_process(layout.path)
    assert answer == {"plot": str(layout.plot), "notes": [], "forks": 1, "children_left": False}
    here = tmp_path / "here.png"  # drawn by plot_returns in another fresh process (this one's
    subprocess.run([sys.executable, "-c", DRAW_IN_PLACE, str(layout.path), str(here)],
                   check=True, timeout=120)  # matplotlib settings may differ after other tests)
    assert layout.plot.read_bytes() == here.read_bytes()
    assert run_report_in_a_fresh_process(layout.path)["forks"] == 0  # current: none drawn


def test_report_with_other_threads_running_draws_the_plot_itself(tmp_path: Path):
    need_module("matplotlib")
    layout, _ = fake_sweep(tmp_path)
    answer = run_report_in_a_fresh_process(layout.path, "thread")
    assert answer == {"plot": str(layout.plot), "notes": [], "forks": 0, "children_left": False}
    assert layout.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_report_that_fails_leaves_no_plot_process_behind(tmp_path: Path):
    (tmp_path / "trials.json").write_text("not json")
    answer = run_report_in_a_fresh_process(tmp_path)
    assert answer["error"].startswith("BadConfig:") and "not a sweep directory" in answer["error"]
    assert answer["forks"] == 1 and answer["children_left"] is False


def test_a_trial_handed_out_after_the_stop_starts_nothing(tmp_path: Path):
    """A stopping executor may still hand a queued trial to a free thread: it must not start a
    worker (whose server's socket directory the stop could then miss)."""
    import threading

    from dacbench_remote.sweeps.trial_runner import run_trial

    stop = threading.Event()
    stop.set()
    trial = Trial("gymnasium:CartPole-v1", "random", 0, 1)
    outcome = run_trial(trial, tmp_path / "sweep", run_id="r", cancel_event=stop)
    assert outcome.status == "cancelled" and "not started" in outcome.error
    assert not SweepDir(tmp_path / "sweep").trial_dir(trial.id).exists()


def test_trials_read_back_keep_their_recorded_ids(tmp_path: Path):
    layout, trials = fake_sweep(tmp_path)
    assert [t.id for t in layout.trials()] == [t.id for t in trials]
    tampered = {**trials[0].to_dict(), "seed": 99}  # an edited entry: its id is computed again
    assert Trial.from_dict(tampered).id == Trial("gymnasium:CartPole-v1", "random", 99, 3).id
    assert Trial.from_dict(tampered, keep_id=True).id == trials[0].id


def test_without_pyarrow_the_tables_are_csv_only(tmp_path: Path, monkeypatch):
    layout, _ = fake_sweep(tmp_path)
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.split(".")[0] == "pyarrow":
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert write_tables(layout) == [layout.results_csv, layout.trials_csv]
    assert not layout.results_parquet.exists()
    assert len(read_results_csv(layout.results_csv)) == 6


def test_sockets_of_killed_servers_are_removed_only_inside_the_socket_dir(tmp_path, monkeypatch):
    import socket

    from dacbench_remote._sys.sockets import new_socket_path
    from dacbench_remote.sweeps.trial_runner import remove_server_sockets

    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(tmp_path / "socks"))
    killed = new_socket_path()
    for path in (killed, Path(f"{killed}.data")):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    flat = tmp_path / "socks" / "srv-1.sock"  # left by an older version
    flat.touch()
    outside = tmp_path / "outside.sock"
    outside.touch()
    remove_server_sockets([f"{killed.parent.name}/ctl.sock", "srv-1.sock", "../outside.sock",
                           f"../{outside.name}", "srv-zz/ctl.sock"])
    assert list((tmp_path / "socks").iterdir()) == []
    assert outside.exists()


def test_the_worker_entry_point_runs_under_the_eagerly_imported_package():
    """The sweeps package imports its modules at once; none of them may import the worker, or
    `python -m dacbench_remote.sweeps.worker` would run a second copy of it (runpy warns)."""
    result = subprocess.run([sys.executable, "-W", "error", "-m", "dacbench_remote.sweeps.worker"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("usage: python -m dacbench_remote.sweeps.worker TRIAL_DIR")


def test_a_worker_error_of_a_dead_server_counts_as_one_and_an_env_error_does_not(tmp_path: Path):
    """Retries read the error payload the worker writes (wire.replies); they key on its type."""
    from dacbench_remote._sys.files import atomic_write_json
    from dacbench_remote.errors import RemoteError, ServerCrashed
    from dacbench_remote.sweeps.trial_runner import server_died
    from dacbench_remote.wire.replies import error_payload

    atomic_write_json(tmp_path / "error.json", error_payload(ServerCrashed("killed")))
    assert server_died(tmp_path)
    atomic_write_json(tmp_path / "error.json",
                      error_payload(RemoteError("ValueError", "the env raised")))
    assert not server_died(tmp_path)
