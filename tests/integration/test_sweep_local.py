"""Sweeps on the local executor with real workers and servers: resume, time-outs, failures, cancel."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from dacbench_remote._sys.procfs import ProcessRecord, wait_gone
from dacbench_remote.errors import SweepAlreadyRunning
from dacbench_remote.sweeps import SweepDir, cancel, load_spec, read_results_csv, report, run_sweep
from dacbench_remote.sweeps import status as sweep_status
from dacbench_remote.sweeps.sweepdir import read_json, read_jsonl

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HELPERS = "tests.integration.sweep_helpers"
DRIVER = "import sys; from dacbench_remote.sweeps import run_sweep; run_sweep(sys.argv[1], workers=2)"


@pytest.fixture
def sweep_env(monkeypatch, tmp_path: Path) -> dict[str, str]:
    """Environment for drivers, workers and servers: helpers importable, a private socket dir."""
    yield from trial_environment(monkeypatch, tmp_path)


def trial_environment(monkeypatch, tmp_path: Path):
    """sweep_env's body, for other modules' fixtures (no sockets may be left behind)."""
    sockets = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))  # short: AF_UNIX path limit
    values = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DACBENCH_REMOTE_SOCKET_DIR": str(sockets),
        "DACBR_TEST_COUNTER": str(tmp_path / "executions.txt"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield values
    leftovers = sorted(p.name for p in sockets.iterdir())
    shutil.rmtree(sockets, ignore_errors=True)
    assert leftovers == [], f"sockets left behind: {leftovers}"


def write_spec(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def executions(counter: Path) -> list[tuple[str, str]]:
    """(run id, trial id) per trial execution, as the counting agent recorded them."""
    if not counter.exists():
        return []
    return [tuple(line.split()) for line in counter.read_text().splitlines()]


def start_driver(spec: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(spec)], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def recorded_processes(layout: SweepDir) -> list[ProcessRecord]:
    records = []
    for path in layout.path.glob("trials/*/running.json"):
        data = read_json(path) or {}
        records += [ProcessRecord.from_dict(p) for p in data.get("processes", [])]
    return records


def test_resume_after_killing_the_driver_runs_only_the_missing_trials(tmp_path: Path,
                                                                        sweep_env, monkeypatch):
    monkeypatch.setenv("DACBR_TEST_ACT_DELAY", "0.01")  # a trial takes a few seconds
    spec_path = write_spec(tmp_path / "sweep.toml", f"""
        name = "resume"
        episodes = 3
        time_limit = 120
        [runtime]
        kind = "local"
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["{HELPERS}:counting_agent"]
        seeds = {{ start = 0, count = 6 }}
    """)
    spec = load_spec(spec_path)
    layout = SweepDir(spec.dir)
    all_ids = {t.id for t in spec.trials}
    counter = Path(sweep_env["DACBR_TEST_COUNTER"])

    driver = start_driver(spec_path, {**sweep_env, "DACBR_TEST_ACT_DELAY": "0.01"})
    try:
        wait_for(lambda: len(layout.outcomes()) >= 2, 120, "two trials to complete")
        in_flight = recorded_processes(layout)
        driver.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs in the driver
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    done_before = set(SweepDir(spec.dir).outcomes())  # what its journal holds
    assert 2 <= len(done_before) < len(all_ids), "the driver should die midway"
    # Workers die with their driver; their servers follow when the lifeline closes.
    assert wait_gone(in_flight, timeout=30), "processes of the killed driver's trials survived"
    first_run = {run_id for run_id, _ in executions(counter)}
    assert len(first_run) == 1

    result = run_sweep(spec_path, workers=2)

    assert set(result.skipped) == done_before
    assert {o.trial_id for o in result.outcomes} == all_ids - done_before
    assert {o.status for o in result.outcomes} == {"done"}
    second = [trial for run_id, trial in executions(counter) if run_id == result.run_id]
    assert Counter(second) == Counter(all_ids - done_before)  # each missing trial once
    first = Counter(trial for run_id, trial in executions(counter) if run_id in first_run)
    assert all(first[t] == 1 for t in done_before)  # complete trials ran exactly once overall
    rows = read_results_csv(layout.results_csv)
    assert Counter(r["trial_id"] for r in rows) == {t: 3 for t in all_ids}
    starts = [line for line in read_jsonl(layout.runs) if line["event"] == "start"]
    assert len({line["run_id"] for line in starts}) == 2  # each run has its own id


REPORTING_DRIVER = """
import sys
from dacbench_remote.sweeps import run_sweep

def progress(line):  # what a user sees: each line in the file at once (no fsync needed)
    with open(sys.argv[2], "a") as handle:
        handle.write(line + "\\n")

run_sweep(sys.argv[1], workers=1, progress=progress)
"""


def test_sigkill_between_a_trial_finishing_and_its_group_commit_loses_nothing_reported(
        tmp_path: Path, sweep_env):
    """The driver is SIGKILLed while trials have finished (their workers wrote their rows) but
    their group commit is still due: every trial it had reported finished is in the journal
    with its rows, and on resume runs no more; the finished but unreported ones run again."""
    spec_path = write_spec(tmp_path / "sweep.toml", f"""
        name = "durable"
        episodes = 1
        time_limit = 120
        [runtime]
        kind = "local"
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["{HELPERS}:counting_agent"]
        seeds = {{ start = 0, count = 200 }}
    """)
    # Enough trials for several group commits (one a second): 40 warm trials could all
    # finish before the first, leaving no moment with some reported and one waiting.
    spec = load_spec(spec_path)
    layout = SweepDir(spec.dir)
    counter = Path(sweep_env["DACBR_TEST_COUNTER"])
    reports = tmp_path / "reported.txt"

    def reported() -> set[str]:
        text = reports.read_text() if reports.exists() else ""
        return {line.split()[1] for line in text.splitlines()
                if line.startswith("[") and " done " in line}

    def finished_unreported() -> set[str]:
        finished = {p.parent.name for p in layout.path.glob("trials/*/episodes.jsonl")}
        return finished - reported()

    driver = subprocess.Popen([sys.executable, "-c", REPORTING_DRIVER, str(spec_path),
                               str(reports)], cwd=REPO, env={**os.environ, **sweep_env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # In the window: some trials reported, and a finished one waiting for the next commit.
        wait_for(lambda: len(reported()) >= 2 and finished_unreported(), 120,
                 "a finished trial waiting for its group commit")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    said = reported()
    waiting = finished_unreported()
    assert said and waiting, (said, waiting)
    recorded = SweepDir(spec.dir).outcomes()  # a fresh reader of the journal
    assert said <= set(recorded), said - set(recorded)
    assert all(recorded[t].status == "done" for t in said)
    for trial_id in said:  # with its rows, as the worker wrote them
        rows = SweepDir(spec.dir).episode_rows(trial_id)
        assert rows == read_jsonl(layout.trial_dir(trial_id) / "episodes.jsonl")
        assert len(rows) == 1
    first_run = {run_id for run_id, _ in executions(counter)}
    assert len(first_run) == 1

    result = run_sweep(spec_path, workers=1)

    assert result.ok, [o.error for o in result.outcomes]
    assert set(result.skipped) == set(recorded) >= said
    runs = Counter(trial for _, trial in executions(counter))
    assert all(runs[t] == 1 for t in said)  # reported finished: never run again
    rows = read_results_csv(layout.results_csv)
    assert Counter(r["trial_id"] for r in rows) == {t.id: 1 for t in spec.trials}


def test_timed_out_and_failing_trials_are_recorded_while_the_rest_finish(tmp_path: Path,
                                                                         sweep_env):
    pidfile = tmp_path / "stuck-server.pid"
    spec_path = write_spec(tmp_path / "sweep.toml", f"""
        name = "robust"
        episodes = 2
        time_limit = 120
        [runtime]
        kind = "local"
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["random"]
        seeds = [0, 1]
        [[trials]]
        benchmark = "{HELPERS}:make_stuck_env"
        kwargs = {{ pidfile = "{pidfile}" }}
        agent = "random"
        time_limit = 3
        [[trials]]
        benchmark = "{HELPERS}:make_failing_env"
        agent = "random"
    """)
    spec = load_spec(spec_path)
    stuck, failing = spec.trials[2], spec.trials[3]
    lines: list[str] = []

    result = run_sweep(spec_path, workers=2, progress=lines.append)

    statuses = {o.trial_id: o.status for o in result.outcomes}
    assert statuses == {spec.trials[0].id: "done", spec.trials[1].id: "done",
                        stuck.id: "timed_out", failing.id: "failed"}
    outcomes = {o.trial_id: o for o in result.outcomes}
    assert "time limit of 3 s" in outcomes[stuck.id].error
    assert "benchmark exploded on purpose" in outcomes[failing.id].error
    assert not result.ok
    # The stuck benchmark's server was stopped, not left hanging in step().
    server = ProcessRecord.of(int(pidfile.read_text()))
    assert server is None or wait_gone([server], timeout=10)
    layout = SweepDir(spec.dir)
    error = read_json(layout.trial_dir(failing.id) / "error.json")
    assert "benchmark exploded on purpose" in error["message"] and error["traceback"]
    rows = read_results_csv(layout.results_csv)
    assert {r["trial_id"] for r in rows} == {spec.trials[0].id, spec.trials[1].id}
    assert any("timed_out" in line for line in lines) and any("failed" in line for line in lines)

    summary = report(layout.path, plot=False)
    assert summary.counts == {"total": 4, "done": 2, "failed": 1, "timed_out": 1}
    assert "time limit of 3 s" in str(summary) and "benchmark exploded" in str(summary)
    assert "4/4 trials finished (2 done, 1 failed, 1 timed out)" in str(sweep_status(layout.path))

    # Resuming finds everything recorded: nothing runs again unless failures are retried.
    again = run_sweep(spec_path, workers=2)
    assert again.outcomes == [] and len(again.skipped) == 4
    retried = run_sweep(spec_path, workers=2, retry_failed=True)
    assert {o.trial_id for o in retried.outcomes} == {stuck.id, failing.id}


def test_cancel_stops_driver_workers_and_servers_and_records_nothing(tmp_path: Path, sweep_env):
    pidfiles = [tmp_path / f"server-{i}.pid" for i in range(2)]
    trials = "".join(f"""
        [[trials]]
        benchmark = "{HELPERS}:make_stuck_env"
        kwargs = {{ pidfile = "{pidfile}" }}
        agent = "random"
        seed = {i}
    """ for i, pidfile in enumerate(pidfiles))
    spec_path = write_spec(tmp_path / "sweep.toml", """
        name = "cancel-me"
        time_limit = 600
        [runtime]
        kind = "local"
    """ + trials)
    layout = SweepDir(load_spec(spec_path).dir)
    driver = start_driver(spec_path, sweep_env)
    try:
        wait_for(lambda: all(p.exists() for p in pidfiles), 60, "both servers to start")
        servers = [ProcessRecord.of(int(p.read_text())) for p in pidfiles]
        wait_for(lambda: len(recorded_processes(layout)) >= 4, 10, "running.json to list them")
        assert "2 running" in str(sweep_status(layout.path))
        with pytest.raises(SweepAlreadyRunning, match="is in use by another run"):
            run_sweep(spec_path)

        result = cancel(layout.path)

        assert result.driver.startswith("stopped"), str(result)
        assert driver.wait(timeout=30) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    output = driver.stdout.read()
    assert "KeyboardInterrupt" in output, output
    assert wait_gone([s for s in servers if s is not None], timeout=10)
    assert layout.outcomes() == {}  # cancelled trials run on resume
    assert not list(layout.path.glob("trials/*/done.json"))
    assert not list(layout.path.glob("trials/*/running.json"))
    after = sweep_status(layout.path)
    assert after.counts.get("pending") == 2 and after.driver == "not running"
    assert "0 trial process(es) stopped" in str(cancel(layout.path))  # idempotent
    assert json.loads(layout.runs.read_text().splitlines()[-1])["interrupted"] is True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_on_the_driver_stops_its_trials(tmp_path: Path, sweep_env, sig):
    pidfile = tmp_path / "server.pid"
    spec_path = write_spec(tmp_path / "sweep.toml", f"""
        name = "interrupt-me"
        time_limit = 600
        [runtime]
        kind = "local"
        [[trials]]
        benchmark = "{HELPERS}:make_stuck_env"
        kwargs = {{ pidfile = "{pidfile}" }}
        agent = "random"
    """)
    layout = SweepDir(load_spec(spec_path).dir)
    driver = start_driver(spec_path, sweep_env)
    try:
        wait_for(pidfile.exists, 60, "the server to start")
        server = ProcessRecord.of(int(pidfile.read_text()))
        wait_for(lambda: len(recorded_processes(layout)) >= 2, 10, "running.json")
        workers = recorded_processes(layout)
        driver.send_signal(sig)
        assert driver.wait(timeout=30) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert "KeyboardInterrupt" in driver.stdout.read()
    assert wait_gone([p for p in [server, *workers] if p is not None], timeout=10)
    assert layout.outcomes() == {}
    assert not list(layout.path.glob("trials/*/done.json"))


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "fresh"])
def test_retries_run_a_trial_again_when_its_server_died_but_not_when_the_env_raised(
        tmp_path: Path, sweep_env, warm: bool):
    spec_path = write_spec(tmp_path / "sweep.toml", f"""
        name = "retries"
        episodes = 2
        time_limit = 120
        retries = 1
        [runtime]
        kind = "local"
        [executor.local]
        warm = {str(warm).lower()}
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["{HELPERS}:server_killing_agent"]
        seeds = [0, 1]
        [[trials]]
        benchmark = "{HELPERS}:make_failing_env"
        agent = "random"
    """)
    spec = load_spec(spec_path)
    killed, other, failing = spec.trials
    assert {t.retries for t in spec.trials} == {1}

    result = run_sweep(spec_path, workers=1)

    outcomes = {o.trial_id: o for o in result.outcomes}
    assert [outcomes[t.id].status for t in spec.trials] == ["done", "done", "failed"]
    # The first trial's server was SIGKILLed: recorded, and run again to the end.
    [retry] = outcomes[killed.id].retries
    assert retry["attempt"] == 1 and retry["error"].startswith("ServerCrashed: "), retry
    assert retry["run_id"] == result.run_id
    created = Path(sweep_env["DACBR_TEST_COUNTER"]).read_text().split()
    assert Counter(created) == {killed.id: 2, other.id: 1}
    layout = SweepDir(spec.dir)
    assert read_json(layout.done_file(killed.id))["retries"] == [retry]
    # The env's own exception is not retried.
    assert outcomes[other.id].retries == [] and outcomes[failing.id].retries == []
    assert "benchmark exploded on purpose" in outcomes[failing.id].error
    with open(layout.trials_csv, newline="") as handle:
        assert [row["retries"] for row in csv.DictReader(handle)] == ["1", "0", "0"]
    rows = read_results_csv(layout.results_csv)
    assert sorted((r["trial_id"], r["episode"]) for r in rows) == sorted(
        (t.id, e) for t in (killed, other) for e in (0, 1))


def test_retries_must_be_a_count(tmp_path: Path):
    from dacbench_remote.errors import BadConfig

    for value, problem in [("-1", "must be 0 or more"), ('"2"', "must be an integer")]:
        spec_path = write_spec(tmp_path / "sweep.toml", f"""
            name = "bad-retries"
            retries = {value}
            [grid]
            benchmarks = ["gymnasium:CartPole-v1"]
            agents = ["random"]
            seeds = [0]
        """)
        with pytest.raises(BadConfig, match=f"sweep.toml: retries: {problem}"):
            load_spec(spec_path)


def test_luby_sweep_returns_equal_in_process_run_episode(tmp_path: Path, sweep_env, base_image):
    """The sweep's results.csv against DACBench's Luby in this process: `run_episode` with the
    agent spec "random" and the trial's seeds, the global RNGs seeded as the server documents."""
    import random

    import gymnasium
    import numpy as np

    from dacbench_remote.host.agents import make_agent
    from dacbench_remote.host.runner import run_episode
    from tests.needs import need_module

    benchmarks = need_module("dacbench.benchmarks")

    class GlobalSeeding(gymnasium.Wrapper):
        def reset(self, *, seed=None, options=None):
            if seed is not None:
                random.seed(seed)
                np.random.seed(seed)
            return self.env.reset(seed=seed, options=options)

    spec_path = write_spec(tmp_path / "sweep.toml", f"""
        name = "luby-reference"
        episodes = 3
        time_limit = 300
        [runtime]
        kind = "bwrap"
        image = "{base_image}"
        [grid]
        benchmarks = ["Luby"]
        agents = ["random"]
        seeds = [0, 1, 2]
    """)
    result = run_sweep(spec_path, workers=1)
    assert result.ok, [o.error for o in result.outcomes]
    rows = read_results_csv(SweepDir(load_spec(spec_path).dir).results_csv)
    swept = {(r["seed"], r["episode"]): (r["return"], r["length"]) for r in rows}
    in_process = {}
    for seed in (0, 1, 2):
        benchmark = benchmarks.LubyBenchmark()
        config_seed = benchmark.config.get("seed")
        if isinstance(config_seed, int):
            random.seed(config_seed)
            np.random.seed(config_seed)
        env = GlobalSeeding(benchmark.get_environment())
        agent = make_agent("random", env, seed)
        for episode in range(3):
            done = run_episode(env, agent, episode, seed + episode)
            in_process[(seed, episode)] = (done.return_, done.length)
    assert len(swept) == 9 and swept == in_process
    assert len({value for value, _ in in_process.values()}) > 1


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "fresh"])
def test_dacbench_baselines_in_a_sweep_equal_run_baselines(tmp_path: Path, sweep_env, warm):
    """`dacbench:...` agents in sweep.toml run next to the env (in forked servers too): the
    results and each trial's DACBench logs equal DACBench's run_baselines in-process."""
    from tests.baseline_reference import performance_frame, reference

    spec_path = write_spec(tmp_path / "sweep.toml", f"""
        name = "baselines"
        episodes = 2
        time_limit = 300
        [runtime]
        kind = "local"
        [executor.local]
        warm = {str(warm).lower()}
        [grid]
        benchmarks = ["Luby"]
        agents = ["dacbench:optimal", "dacbench:random:2"]
        seeds = [0, 1]
    """)
    result = run_sweep(spec_path, workers=1)
    assert result.ok, [o.error for o in result.outcomes]
    layout = SweepDir(load_spec(spec_path).dir)
    rows = read_results_csv(layout.results_csv)
    assert len(rows) == 8
    for agent, name in (("dacbench:optimal", "optimal"), ("dacbench:random:2", "random_fixed2")):
        expected = reference(sys.executable, tmp_path / name, "LubyBenchmark", agent, 2, [0, 1])
        for seed in (0, 1):
            run_dir = Path("LubyBenchmark", f"{name}_{seed}")
            frame = performance_frame(expected / run_dir)
            mine = sorted((r for r in rows if r["agent"] == agent and r["seed"] == seed),
                          key=lambda r: r["episode"])
            assert [r["return"] for r in mine] == list(frame["overall_performance"])
            trial = next(t for t in load_spec(spec_path).trials
                         if (t.agent, t.seed) == (agent, seed))
            logs = layout.trial_dir(trial.id) / "dacbench" / run_dir
            assert performance_frame(logs).equals(frame)
