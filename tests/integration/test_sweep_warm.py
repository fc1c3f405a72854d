"""Warm trials (a zygote per worker, a forked server per trial) give exactly the results of a
fresh server per trial, and a trial's fault costs only that trial."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dacbench_remote._sys.procfs import ProcessRecord
from dacbench_remote.sweeps import SweepDir, load_spec, read_results_csv, run_sweep
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


USER_SWEEP = """
import json, sys
from dacbench_remote.sweeps import load_spec, read_results_csv, run_sweep
from dacbench_remote.sweeps.sweepdir import SweepDir
result = run_sweep(sys.argv[1], workers=1)
rows = read_results_csv(SweepDir(load_spec(sys.argv[1]).dir).results_csv)
print(json.dumps({"ok": result.ok, "rows": rows}, default=str))
"""


def test_warm_luby_in_a_real_image_as_an_unprivileged_user(base_image, unprivileged_user,
                                                           user_python):
    import shutil
    import subprocess
    import uuid

    from dacbench_remote.runtimes.rootfs import force_rmtree
    from tests.integration.runtime_images import SHARED_DIR

    scratch = SHARED_DIR / "scratch" / f"warm-{uuid.uuid4().hex[:6]}"
    scratch.mkdir(parents=True)
    shutil.chown(scratch, unprivileged_user)
    sockets = Path(f"/tmp/dacbr-w{uuid.uuid4().hex[:6]}")
    script = scratch / "sweep.py"
    script.write_text(USER_SWEEP)
    reports = {}
    try:
        for warm in (True, False):
            directory = scratch / f"warm-{warm}"
            directory.mkdir()
            write_spec(directory / "sweep.toml", f"""
                name = "luby"
                episodes = 1
                time_limit = 120
                [runtime]
                kind = "bwrap"
                image = "{base_image}"
                [executor.local]
                warm = {str(warm).lower()}
                [grid]
                benchmarks = ["Luby"]
                agents = ["random"]
                seeds = [0, 1, 2]
            """)
            shutil.chown(directory, unprivileged_user)
            proc = subprocess.run(
                ["runuser", "-u", unprivileged_user, "--", "env",
                 f"DACBENCH_REMOTE_SOCKET_DIR={sockets}", f"HOME={scratch}", user_python,
                 str(script), str(directory / "sweep.toml")],
                capture_output=True, text=True, cwd=str(scratch), timeout=600)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "warm trials are off" not in proc.stderr  # the image's server has --zygote
            reports[warm] = json.loads(proc.stdout.strip().splitlines()[-1])
            assert reports[warm]["ok"], reports[warm]
            assert sorted(os.listdir(sockets)) == []  # no sockets or directories left
        assert len(reports[True]["rows"]) == 3
        assert {r["runtime"] for r in reports[True]["rows"]} == {"bwrap"}
        assert comparable(reports[True]["rows"]) == comparable(reports[False]["rows"])
    finally:
        force_rmtree(scratch)
        shutil.rmtree(sockets, ignore_errors=True)


def agent_spec(directory: Path, agent: str, seeds: str) -> Path:
    directory.mkdir()
    return write_spec(directory / "sweep.toml", f"""
        name = "agents"
        episodes = 1
        time_limit = 60
        [runtime]
        kind = "local"
        [grid]
        benchmarks = ["gymnasium:CartPole-v1"]
        agents = ["{HELPERS}:{agent}"]
        seeds = {seeds}
    """)


def test_warm_workers_are_forked_from_one_host_and_never_see_an_earlier_trial(
        tmp_path: Path, sweep_env):  # noqa: F811
    result = run_sweep(agent_spec(tmp_path / "s", "global_reading_agent", "[0, 1, 2, 3, 4]"),
                       workers=1)
    assert result.ok
    lines = [line.split() for line in Path(sweep_env["DACBR_TEST_COUNTER"]).read_text()
             .splitlines()]
    assert len(lines) == 5
    assert {count for count, _, _ in lines} == {"0"}  # each worker started pristine
    assert len({pid for _, pid, _ in lines}) == 5  # a process per trial
    hosts = {parent for _, _, parent in lines}
    assert len(hosts) == 1 and int(hosts.pop()) != os.getpid()  # all forked by one worker host


def test_a_killed_worker_host_costs_only_the_trial_it_was_running(tmp_path: Path,
                                                                   sweep_env):  # noqa: F811
    spec_path = agent_spec(tmp_path / "s", "host_killing_agent", "[0, 1, 2]")
    spec = load_spec(spec_path)
    result = run_sweep(spec_path, workers=1)
    statuses = sorted(o.status for o in result.outcomes)
    # The first trial lost its host (and its worker): cancelled, so it runs again on resume;
    # the next trials got a new host and finished.
    assert statuses == ["cancelled", "done", "done"]
    killed_host = int(Path(sweep_env["DACBR_TEST_COUNTER"]).with_suffix(".host-killed")
                      .read_text())
    assert ProcessRecord.of(killed_host) is None  # gone (or a zombie)
    resumed = run_sweep(spec_path, workers=1)
    assert [o.status for o in resumed.outcomes] == ["done"]
    assert len(read_results_csv(SweepDir(spec.dir).results_csv)) == 3


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "fresh"])
def test_unseeded_global_draws_differ_in_every_trial(tmp_path: Path, sweep_env,  # noqa: F811
                                                     warm: bool):
    """Workers forked from one worker host and servers forked from one zygote (its spare too)
    draw fresh numbers from numpy's legacy global RNG and `random`, as new processes would."""
    from tests.integration.sweep_helpers import global_draws

    counter = Path(sweep_env["DACBR_TEST_COUNTER"])
    (tmp_path / "s").mkdir()
    spec_path = write_spec(tmp_path / "s" / "sweep.toml", f"""
        name = "draws"
        episodes = 1
        time_limit = 60
        [runtime]
        kind = "local"
        [executor.local]
        warm = {str(warm).lower()}
        [grid]
        agents = ["{HELPERS}:global_draws_agent"]
        seeds = [0, 1, 2, 3]
        [[grid.benchmarks]]
        benchmark = "{HELPERS}:make_global_draws_env"
        kwargs = {{ record = "{counter}" }}
    """)
    result = run_sweep(spec_path, workers=1)
    assert result.ok, [o.error for o in result.outcomes]
    draws = global_draws(counter)
    for who in ("agent", "env"):
        assert len(draws[who]) == 4, draws
        assert len({pid for _, _, pid in draws[who]}) == 4  # a process per trial
        assert len({numpy_draw for numpy_draw, _, _ in draws[who]}) == 4, (who, draws[who])
        assert len({random_draw for _, random_draw, _ in draws[who]}) == 4, (who, draws[who])


def cmaes_spec(directory: Path, image: Path, warm: bool) -> Path:
    directory.mkdir()
    return write_spec(directory / "sweep.toml", f"""
        name = "cmaes"
        episodes = 2
        time_limit = 300
        [runtime]
        kind = "bwrap"
        image = "{image}"
        [executor.local]
        warm = {str(warm).lower()}
        [grid]
        benchmarks = ["CMAES"]
        agents = ["random"]
        seeds = [0, 1]
    """)


def test_cmaes_warm_and_in_process_episodes_are_equal(tmp_path: Path, recipe_image):
    """CMAES draws from the global RNGs: with the server's documented seeding, warm trials
    (forked servers, reseeded from entropy first; the second one a spare forked ahead) and an
    in-process run in a venv of the image's pins give the same episodes, value for value. (Fresh
    CMAES servers against DACBench in-process: tests/integration/test_baselines.py.)"""
    import subprocess

    from tests.integration.test_versions import pins_python

    image = recipe_image("dacbench-cmaes")
    episodes = {}
    for warm in (True,):  # fresh servers: see the docstring (the suite's time: CMAES is slow)
        spec_path = cmaes_spec(tmp_path / f"warm-{warm}", image, warm)
        result = run_sweep(spec_path, workers=1)
        assert result.ok, [o.error for o in result.outcomes]
        rows = read_results_csv(SweepDir(load_spec(spec_path).dir).results_csv)
        assert {r["runtime"] for r in rows} == {"bwrap"}
        episodes[warm] = {(int(r["seed"]), int(r["episode"])): (float(r["return"]),
                                                                int(r["length"])) for r in rows}
    python = pins_python("dacbench-cmaes")
    script = Path(__file__).resolve().parents[1] / "inprocess_episodes.py"
    in_process = {}
    for seed in (0, 1):
        done = subprocess.run([python, str(script), "CMAES", str(seed), "2"], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"},
                              cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr[-3000:]
        for episode, (total, length) in enumerate(json.loads(done.stdout)):
            in_process[(seed, episode)] = (total, length)
    assert len(in_process) == 4
    assert episodes[True] == in_process, (episodes[True], in_process)
    assert len({total for total, _ in in_process.values()}) > 1  # episodes that differ


def test_the_spare_server_outlives_the_trial_before_it(tmp_path: Path, sweep_env,  # noqa: F811
                                                        monkeypatch):
    """The zygote forks the next trial's server ahead; the running trial's supervisor must stop
    only its own server (the one whose lifeline its worker holds), not that spare: trials after
    the first run on spares (sockets z*.sock), forked while the trial before them ran."""
    from tests.integration.sweep_helpers import ACT_DELAY_ENV

    monkeypatch.setenv(ACT_DELAY_ENV, "0.15")  # 10 steps: longer than the 1 s snapshot interval
    result = run_sweep(agent_spec(tmp_path / "s", "server_socket_agent", "[0, 1, 2]"),
                       workers=1)
    assert result.ok, [o.error for o in result.outcomes]
    sockets = Path(sweep_env["DACBR_TEST_COUNTER"]).read_text().split()
    assert len(sockets) == 3 and len(set(sockets)) == 3
    assert all(name.startswith("z") for name in sockets[1:]), sockets
