"""What running DACBench's baselines next to the env costs, against DACBench in-process.

Run: python scripts/bench_baselines.py [--episodes N] [--benchmark LubyBenchmark]. Three ways to
run N episodes of DACBench's random baseline, measured in the same run (best of 3, seconds
per episode, server start excluded):
  in-process   DACBench's run_random in this process (the baseline);
  next to env  RemoteRunner.run("dacbench:random"): DACBench's loop in the server (local runtime);
  host agent   RemoteRunner.run("random"): an agent here, every step crossing the socket.
Prints a table with ratios to in-process; it is a report, never an assertion.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy  # noqa: E402

from dacbench_remote import RemoteRunner  # noqa: E402


def in_process(benchmark: str, episodes: int) -> float:
    from dacbench import run_baselines

    with tempfile.TemporaryDirectory() as outdir:
        random.seed(0)
        numpy.random.seed(0)
        started = time.perf_counter()
        run_baselines.run_random(Path(outdir), benchmark, episodes, [0], 0)
        return time.perf_counter() - started


def remote(runner: RemoteRunner, agent: str, episodes: int) -> float:
    started = time.perf_counter()
    runner.run(agent, episodes, seed=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--benchmark", default="LubyBenchmark")
    args = parser.parse_args()
    n = args.episodes
    with RemoteRunner(args.benchmark, runtime="local", results_path=None) as runner:
        remote(runner, "dacbench:random", 2)  # imports in the server, as in-process below
        in_process(args.benchmark, 2)
        times = {
            "in-process": min(in_process(args.benchmark, n) for _ in range(3)),
            "next to env": min(remote(runner, "dacbench:random", n) for _ in range(3)),
            "host agent": min(remote(runner, "random", n) for _ in range(3)),
        }
    base = times["in-process"]
    print(f"{args.benchmark}, random baseline, {n} episodes (best of 3)")
    print(f"{'':12} {'ms/episode':>10} {'ratio':>6}")
    for name, seconds in times.items():
        print(f"{name:12} {1000 * seconds / n:10.3f} {seconds / base:6.2f}")


if __name__ == "__main__":
    main()
