"""Reference trajectories in-process (in a venv holding one image's pins) and their replay through
remote envs (on a host without DACBench), written with the wire codec so nothing is lost.

Runnable as a script, stdlib + numpy + dacbench_remote only:
  python version_trajectories.py local BENCHMARK SEED OUT.json
      in-process in this interpreter, with the global RNGs seeded the way the server seeds them;
  python version_trajectories.py repeat BENCHMARK SEED
      prints whether two in-process runs are equal without and with the global seeding;
  python version_trajectories.py remote JOBS.json OUT.json
      every job {"name", "benchmark", "image", "reference"} started at once, each in its own
      image through bwrap, then all replayed concurrently (one thread each) from this process.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import warnings
from pathlib import Path

EPISODES = 2
MAX_STEPS = 25


def record(env, seed: int, seed_globals: bool = True) -> list:
    """Episode i resets with seed+i; actions from the action space seeded with `seed`."""
    import numpy

    env.action_space.seed(seed)
    steps: list = []
    for episode in range(EPISODES):
        reset_seed = seed + episode
        if seed_globals:  # what the server does on every reset(seed=s)
            random.seed(reset_seed)
            numpy.random.seed(reset_seed)
        steps.append(["reset", reset_seed, env.reset(seed=reset_seed)])
        for _ in range(MAX_STEPS):
            action = env.action_space.sample()
            result = env.step(action)
            steps.append(["step", action, result])
            if result[2] or result[3]:
                break
    return steps


def replay(env, recorded: list) -> list:
    """The same resets and actions as `recorded`, sent to `env`; results in the same form."""
    steps: list = []
    for kind, argument, _ in recorded:
        if kind == "reset":
            steps.append(["reset", argument, env.reset(seed=argument)])
        else:
            steps.append(["step", argument, env.step(argument)])
    return steps


def local_env(benchmark: str, seed_globals: bool = True):
    """The DACBench env, built after seeding the global RNGs with the benchmark's `seed`."""
    import numpy
    from dacbench import benchmarks

    instance = getattr(benchmarks, f"{benchmark}Benchmark")()
    seed = instance.config.get("seed")
    if seed_globals and isinstance(seed, int) and not isinstance(seed, bool):
        random.seed(seed)
        numpy.random.seed(seed)
    return instance.get_environment()


def run_local(benchmark: str, seed: int, out: Path) -> None:
    from dacbench_remote.wire import codec

    warnings.simplefilter("ignore")
    env = local_env(benchmark)
    trajectory = record(env, seed)
    env.close()
    out.write_text(codec.dumps(trajectory))


def run_repeat(benchmark: str, seed: int) -> None:
    """Two in-process runs each way, in one process; prints {"unseeded": eq, "seeded": eq}."""
    from dacbench_remote.wire import codec

    warnings.simplefilter("ignore")
    equal = {}
    for name, seed_globals in (("unseeded", False), ("seeded", True)):
        runs = [codec.dumps(record(local_env(benchmark, seed_globals), seed, seed_globals))
                for _ in range(2)]
        equal[name] = runs[0] == runs[1]
    print(json.dumps(equal))


def run_remote(jobs: list[dict], out: Path) -> None:
    """Start every job's runner, then replay all at once; results (or errors) by job name."""
    from dacbench_remote import RemoteRunner
    from dacbench_remote.wire import codec

    runners = {job["name"]: RemoteRunner(job["benchmark"], runtime="bwrap", image=job["image"],
                                         results_path=None) for job in jobs}
    results: dict = {}

    def drive(job: dict) -> None:
        recorded = codec.loads(Path(job["reference"]).read_text())
        try:
            results[job["name"]] = replay(runners[job["name"]].get_environment(), recorded)
        except Exception as exc:  # reported to the test, which names the job that failed
            results[job["name"]] = f"{type(exc).__name__}: {exc}"

    try:
        threads = [threading.Thread(target=drive, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Every server is still up here, after all replays: they ran side by side.
        live = {name: [runner.server.pid, runner.server.alive()]
                for name, runner in runners.items()}
    finally:
        for runner in runners.values():
            runner.close()
    out.write_text(codec.dumps({"results": results, "server_pids": live,
                                "dacbench_on_host": "dacbench" in sys.modules}))


def main() -> None:
    mode = sys.argv[1]
    if mode == "local":
        run_local(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    elif mode == "repeat":
        run_repeat(sys.argv[2], int(sys.argv[3]))
    elif mode == "remote":
        run_remote(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}; use local or remote")


if __name__ == "__main__":
    main()
