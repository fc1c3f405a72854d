"""The example experiment (examples/luby-fa.toml) end to end in real containers: from a fresh
clone as an unprivileged user with the bwrap runtime, and on the one-node Slurm; and a Luby
tune step whose grid's best equals an exhaustive search with DACBench in this process.

The images are the repository's recipes built by the test fixtures (the catalog's pins are
re-pinned only after merging), given to the example through its [runtime] table. The wall
time of each run is printed (pytest -s shows it); no test asserts on time.
"""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from dacbench_remote.experiments import ExperimentDir, run_experiment
from dacbench_remote.sweeps.sweepdir import read_jsonl
from dacbench_remote.sweeps.tables import read_results_csv
from tests.conftest import IMAGE_TIMEOUT, USER_VENV_PACKAGES, _user_venv, run_as
from tests.needs import need_module

pytestmark = [pytest.mark.integration, pytest.mark.timeout(IMAGE_TIMEOUT)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "luby-fa.toml"
EXPERIMENT_PACKAGES = ["optuna>=4.0", "cmaes>=0.10", "matplotlib>=3.7"]


def with_image(text: str, image: Path, extra: str = "") -> str:
    """The example with its trials pinned to `image` under bwrap (instead of the catalog's)."""
    replaced = re.sub(r'\[runtime\]\nkind = "auto"[^\n]*\n',
                      f'[runtime]\nkind = "bwrap"\nimage = "{image}"\n{extra}', text)
    assert replaced != text, "the example's [runtime] table changed; update this test"
    return replaced


def smaller(text: str) -> str:
    """The example with fewer seeds and TPE trials: the same steps, a fifth of the trials
    (each Slurm task starts its own interpreter and container: ~7-10 s here, two at a time).
    The full example's wall time on Slurm is measured by hand (docs/experiments.md)."""
    changes = {"seeds = [0, 1, 2]": "seeds = [0]", "trials = 16": "trials = 4",
               "seeds = { start = 0, count = 10 }": "seeds = { start = 0, count = 2 }"}
    for old, new in changes.items():
        assert old in text, f"the example no longer has {old!r}; update this test"
        text = text.replace(old, new)
    return text


def check_example_results(directory: Path, image_sha256: str, seeds: int = 10) -> None:
    layout = ExperimentDir(directory)
    for step in ("tune_luby", "evaluate_luby", "tune_fa", "evaluate_fa", "report"):
        assert layout.outputs(step) is not None, step
    for step in ("evaluate_luby", "evaluate_fa"):
        rows = read_results_csv(layout.outputs(step)["outputs"]["results"])
        assert len(rows) == 3 * seeds * 10  # three policies, the seeds, 10 episodes each
        assert {r["image_sha256"] for r in rows} == {image_sha256}
        assert {r["seed"] for r in rows} == set(range(seeds))
        assert {r["policy"] for r in rows} == {"random", "tuned static", "optimal"}
        # Per instance: DACBench's ids, for the agents run on the host; DACBench's optimal
        # policy runs in the server with DACBench's own loop, which reports no instance.
        assert all(r["instance"] != "" for r in rows if r["policy"] != "optimal")
        optimal = [r for r in rows if r["policy"] == "optimal"]
        assert {r["agent"] for r in optimal} == {"dacbench:optimal"}
    report = layout.outputs("report")["outputs"]
    assert set(report["figures"]) == {"history", "distributions", "instances", "ranking"}
    for png in report["figures"].values():
        assert Path(png).stat().st_size > 1000
    markdown = Path(report["markdown"]).read_text()
    assert "## Evaluation: evaluate_luby" in markdown and "tuned static" in markdown
    assert "optimal" in markdown


def test_the_example_runs_from_a_fresh_clone_as_an_unprivileged_user_with_bwrap(
        unprivileged_user: str, base_image_info: dict):
    from dacbench_remote.runtimes.bwrap import bwrap_problem

    assert bwrap_problem() is None, bwrap_problem()
    python = _user_venv("venv-experiments", [*USER_VENV_PACKAGES, *EXPERIMENT_PACKAGES])
    work = Path(tempfile.mkdtemp(prefix="dacbr-example-", dir="/tmp"))
    try:
        clone = work / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        subprocess.run(["chown", "-R", unprivileged_user, str(work)], check=True)
        spec = clone / "examples" / "luby-fa.toml"
        spec.write_text(with_image(spec.read_text(), Path(base_image_info["path"])))
        command = [python, "-m", "dacbench_remote", "experiment", "run", str(spec)]
        started = time.monotonic()
        first = run_as(unprivileged_user, command, cwd=str(clone))
        seconds = time.monotonic() - started
        print(f"\nexample, bwrap as {unprivileged_user}, first run: {seconds:.1f} s wall")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "FAILED" not in first.stdout
        check_example_results(clone / "examples" / "luby-fa", base_image_info["sha256"])

        started = time.monotonic()
        second = run_as(unprivileged_user, command, cwd=str(clone))
        print(f"example, bwrap as {unprivileged_user}, second run (all cached): "
              f"{time.monotonic() - started:.1f} s wall")
        assert second.returncode == 0, second.stdout + second.stderr
        assert ", 0 trial(s) executed" in second.stdout
        status = run_as(unprivileged_user, [python, "-m", "dacbench_remote", "experiment",
                                            "status", str(spec)], cwd=str(clone))
        assert "tune_luby [tune]: cached" in status.stdout
        assert "tune 7/7 told, best so far" in status.stdout

        # Nothing is left behind: no process of the user, no socket, no mount.
        # Exited processes whose parent is gone wait for init to reap them (this machine's init
        # does so seconds later): dead, so not left behind; any other process of the user is.
        listing = subprocess.run(["ps", "-u", unprivileged_user, "-o", "pid=,ppid=,stat=,args="],
                                 capture_output=True, text=True).stdout.splitlines()
        left = "\n".join(line for line in listing
                         if not (line.split()[2].startswith("Z") and line.split()[1] == "1"))
        assert left == "", f"processes left behind: {left}"
        sockets = run_as(unprivileged_user, [python, "-c", (
            "from dacbench_remote._sys.sockets import socket_dir; import os; d = socket_dir(); "
            "print(sorted(os.listdir(d)) if d.exists() else [])")])
        assert sockets.stdout.strip() == "[]", sockets.stdout + sockets.stderr
        uid, home = pwd.getpwnam(unprivileged_user).pw_uid, pwd.getpwnam(unprivileged_user).pw_dir
        mounts = [line for line in Path("/proc/mounts").read_text().splitlines()
                  if str(work) in line or home in line or f"user_id={uid}," in line]
        assert mounts == [], f"mounts left behind: {mounts}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.usefixtures("slurm_cluster")
def test_the_example_runs_on_the_one_node_slurm(tmp_path: Path, base_image_info, monkeypatch):
    sockets = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(sockets))
    try:
        spec = tmp_path / "luby-fa.toml"
        full = os.environ.get("DACBR_TEST_FULL_EXAMPLE") == "1"  # by hand: the whole example
        text = with_image(EXAMPLE.read_text(), Path(base_image_info["path"]))
        spec.write_text(text if full else smaller(text))
        started = time.monotonic()
        result = run_experiment(spec, executor="slurm", progress=print)
        print(f"\nexample{'' if full else ' (smaller)'} on the one-node Slurm: "
              f"{time.monotonic() - started:.1f} s wall, {result.executed} trials")
        assert result.ok, result
        check_example_results(tmp_path / "luby-fa", base_image_info["sha256"],
                              seeds=10 if full else 2)
        jobs = {p.name.split("_")[0]
                for p in tmp_path.glob("luby-fa/steps/*/slurm/*_submission.sh")}
        assert len(jobs) >= 4  # every container step submitted array jobs
    finally:
        leftovers = sorted(p.name for p in sockets.iterdir())
        shutil.rmtree(sockets, ignore_errors=True)
    assert leftovers == [], f"sockets left behind: {leftovers}"


def test_tune_finds_the_best_static_luby_action_of_an_exhaustive_in_process_grid(
        tmp_path: Path, base_image: Path, monkeypatch):
    """Every static action of Luby on the training instances: the tune step's values and best
    against DACBench in this process (run_episode, the same seeds and instance order, the
    global RNGs seeded as the server documents)."""
    import gymnasium
    import numpy as np

    from dacbench_remote.host.agents import make_agent
    from dacbench_remote.host.runner import run_episode

    benchmarks = need_module("dacbench.benchmarks")
    sockets = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(sockets))
    config = {"instance_set_path": "luby_train.csv"}
    seeds, episodes = [0, 1], 4
    spec = tmp_path / "tune.toml"
    spec.write_text(textwrap.dedent(f"""
        name = "luby-grid"
        [runtime]
        kind = "bwrap"
        image = "{base_image}"
        [executor.local]
        workers = 2
        [steps.tune]
        kind = "tune"
        benchmark = "Luby"
        config = {{ instance_set_path = "luby_train.csv" }}
        agent = "static:{{action}}"
        seeds = {seeds}
        episodes = {episodes}
        sampler = "grid"
        [steps.tune.space]
        action = {{ type = "int", low = 0, high = 6 }}
    """))
    try:
        result = run_experiment(spec)
    finally:
        leftovers = sorted(p.name for p in sockets.iterdir())
        shutil.rmtree(sockets, ignore_errors=True)
    assert leftovers == []
    assert result.ok, result
    tune = result.steps["tune"].outputs

    class GlobalSeeding(gymnasium.Wrapper):
        def reset(self, *, seed=None, options=None):
            if seed is not None:
                random.seed(seed)
                np.random.seed(seed)
            return self.env.reset(seed=seed, options=options)

    in_process, instances = {}, {}
    for action in range(7):
        returns = []
        for seed in seeds:
            benchmark = benchmarks.LubyBenchmark()
            for key, value in config.items():
                benchmark.config[key] = value
            random.seed(benchmark.config["seed"])
            np.random.seed(benchmark.config["seed"])
            env = GlobalSeeding(benchmark.get_environment())
            agent = make_agent(f"static:{action}", env, seed)
            for episode in range(episodes):
                returns.append(run_episode(env, agent, episode, seed + episode).return_)
                instances[(action, seed, episode)] = env.unwrapped.get_inst_id()
        in_process[action] = statistics.fmean(returns)
    told = {r["params"]["action"]: r["value"] for r in read_jsonl(Path(tune["history"]))
            if r["event"] == "told"}
    assert told == in_process
    assert tune["best_value"] == max(in_process.values())
    assert in_process[tune["best"]["action"]] == tune["best_value"]
    assert len(set(in_process.values())) > 1  # the actions differ: the search means something
    rows = read_results_csv(tune["results"])
    recorded = {(int(r["agent"].split(":")[1]), r["seed"], r["episode"]): int(r["instance"])
                for r in rows}
    assert recorded == instances  # the same instances, in DACBench's order


DRIVER = "import sys; from dacbench_remote.experiments import run_experiment; run_experiment(sys.argv[1])"


def test_sigkill_of_the_driver_mid_tune_leaves_no_container_socket_or_mount(
        tmp_path: Path, base_image: Path, monkeypatch):
    """Luby in bwrap containers (warm zygotes): the driver is SIGKILLed while a tune batch
    runs; its workers, servers and containers go with it, their sockets and squashfuse mounts
    too; the next run completes the study without rewriting any finished trial."""
    import optuna

    from dacbench_remote._sys.procfs import ProcessRecord, wait_gone
    from dacbench_remote.sweeps.sweepdir import read_json

    sockets = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))
    env = {**os.environ, "DACBENCH_REMOTE_SOCKET_DIR": str(sockets),
           "PYTHONPATH": str(REPO)}
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(sockets))
    spec = tmp_path / "tune.toml"
    spec.write_text(textwrap.dedent(f"""
        name = "killed"
        [runtime]
        kind = "bwrap"
        image = "{base_image}"
        [executor.local]
        workers = 2
        [steps.tune]
        kind = "tune"
        benchmark = "Luby"
        agent = "static:{{action}}"
        seeds = [0, 1, 2]
        episodes = 200
        sampler = "grid"
        batch = 2
        [steps.tune.space]
        action = {{ type = "int", low = 0, high = 6 }}
    """))
    tune_dir = ExperimentDir(tmp_path / "killed").step_dir("tune")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            told = [r for r in read_jsonl(tune_dir / "history.jsonl") if r["event"] == "told"]
            running = list(tune_dir.glob("trials/*/running.json"))
            if len(told) >= 2 and running:  # (written 0.1 s into a trial: 200 episodes take longer)
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the tune step did not get to its second batch")
        in_flight = [ProcessRecord.from_dict(p) for path in running
                     for p in (read_json(path) or {}).get("processes", [])]
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    try:
        assert in_flight and wait_gone(in_flight, timeout=30), "trial processes survived"

        def ours() -> list[str]:  # bwrap, servers, squashfuse of this image or socket dir
            found = []
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if str(sockets) in argv or (str(base_image) in argv and "pytest" not in argv):
                    found.append(f"{proc.name}: {argv[:200]}")
            return found

        deadline = time.monotonic() + 30
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ours() == [], "processes of the killed run left behind"
        # Every server removed its sockets. A bwrap server cannot remove its own directory
        # (bound into its container), and its killed starter could not: those directories
        # stay, empty, until `dacbench-remote cleanup` (host.servers) removes them.
        left = list(sockets.rglob("*"))
        assert [p for p in left if not p.is_dir()] == [], "sockets left behind"
        assert all(not any(p.iterdir()) for p in left)
        # squashfuse mounts are detached once their container holds them: with the containers
        # gone, their squashfuse processes (argv: the image) are gone too (ours() above).
        mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if str(base_image) in line]
        assert mounts == [], f"mounts left behind: {mounts}"
        finished = {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes())
                    for p in tune_dir.glob("trials/*/done.json")}
        assert finished

        result = run_experiment(spec)
        assert result.ok, result
        assert all((tune_dir / "trials" / t / "done.json").stat().st_mtime_ns == stamp
                   for t, (stamp, _) in finished.items())  # not one finished trial ran again
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tune_dir / "study.journal")))
        [summary] = optuna.get_all_study_summaries(storage)
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
        assert sorted(t.params["action"] for t in trials) == list(range(7))
        assert {t.state.name for t in trials} == {"COMPLETE"}
    finally:
        leftovers = [p for p in sockets.rglob("*") if not p.is_dir()]
        shutil.rmtree(sockets, ignore_errors=True)
    assert leftovers == []
