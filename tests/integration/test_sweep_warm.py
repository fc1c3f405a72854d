"""Warm trials (a zygote per worker, a forked server per trial) give exactly the results of a
fresh server per trial, and a trial's fault costs only that trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from dacbench_remote.sweep import SweepDir, load_spec, read_results_csv, run_sweep
from tests.integration.test_sweep_local import HELPERS, sweep_env, write_spec  # noqa: F401

pytestmark = pytest.mark.integration

VOLATILE = {"wall_time", "host", "run_id", "pid", "started", "finished"}


def comparable(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows),
                  key=lambda r: (r["trial_id"], r["episode"]))


def leaky_spec(directory: Path, warm: bool, extra: str = "") -> Path:
    directory.mkdir()
    return write_spec(directory / "sweep.toml", f"""
        name = "leaky"
        episodes = 2
        time_limit = 60
        [runtime]
        kind = "local"
        [executor.local]
        warm = {str(warm).lower()}
        [grid]
        benchmarks = ["tests.envs:make_leaky_env"]
        agents = ["random"]
        seeds = [0, 1, 2, 3, 4]
        {extra}
    """)


def test_warm_results_equal_fresh_results_for_an_env_that_leaks(tmp_path: Path,
                                                                   sweep_env):  # noqa: F811
    warm = run_sweep(leaky_spec(tmp_path / "warm", True), workers=1)
    fresh = run_sweep(leaky_spec(tmp_path / "fresh", False), workers=1)
    assert warm.ok and fresh.ok
    warm_rows = read_results_csv(SweepDir(load_spec(tmp_path / "warm" / "sweep.toml").dir).results_csv)
    fresh_rows = read_results_csv(SweepDir(load_spec(tmp_path / "fresh" / "sweep.toml").dir).results_csv)
    assert len(warm_rows) == 10
    assert comparable(warm_rows) == comparable(fresh_rows)
    # Each trial saw a pristine process: episode 0 no leak (1), episode 1 its own (1+1+10+100).
    assert sorted({float(r["return"]) for r in warm_rows}) == [1.0, 112.0]


def test_a_trial_that_kills_its_server_or_times_out_costs_only_that_trial(tmp_path: Path,
                                                                          sweep_env):  # noqa: F811
    pidfile = tmp_path / "stuck.pid"
    spec_path = leaky_spec(tmp_path / "faults", True, extra=f"""
        [[trials]]
        benchmark = "{HELPERS}:make_server_killing_env"
        agent = "random"
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
    result = run_sweep(spec_path, workers=1)
    statuses = {o.trial_id: o.status for o in result.outcomes}
    assert [statuses[t.id] for t in spec.trials] == ["done"] * 5 + ["failed", "timed_out",
                                                                    "failed"]
    rows = read_results_csv(SweepDir(spec.dir).results_csv)
    assert sorted({float(r["return"]) for r in rows}) == [1.0, 112.0]
    # Resume: nothing runs again; retrying the failures runs just them, warm again.
    assert run_sweep(spec_path, workers=1).outcomes == []
    retried = run_sweep(spec_path, workers=1, retry_failed=True)
    assert sorted(o.status for o in retried.outcomes) == ["failed", "failed", "timed_out"]
