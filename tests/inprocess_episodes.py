"""Episodes of a DACBench benchmark in-process: the reference that sweeps are compared with.

DACBench's loop (act, step, train until the episode ends), with the global seeding a server
documents (`random` and numpy's legacy RNG seeded with the benchmark's config seed before the env
is built, and with s before every reset(seed=s)), and the `random` agent: the action space seeded
with the trial's seed, sampled. Standalone (stdlib, numpy, DACBench), so it runs in a venv that
holds exactly an image's pins:

  python inprocess_episodes.py BENCHMARK SEED EPISODES    prints [[return, length], ...] as JSON
"""

from __future__ import annotations

import json
import random
import sys
import warnings


def seed_globals(seed: int) -> None:
    import numpy

    random.seed(seed)
    numpy.random.seed(seed)


def episodes(benchmark: str, seed: int, count: int) -> list[list]:
    from dacbench import benchmarks

    instance = getattr(benchmarks, f"{benchmark}Benchmark")()
    config_seed = instance.config.get("seed")
    if isinstance(config_seed, int) and not isinstance(config_seed, bool):
        seed_globals(config_seed)
    env = instance.get_environment()
    env.action_space.seed(seed)
    results = []
    for episode in range(count):
        seed_globals(seed + episode)
        env.reset(seed=seed + episode)
        total, length, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            length += 1
            done = terminated or truncated
        results.append([total, length])
    env.close()
    return results


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    name, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(episodes(name, seed, count)))
