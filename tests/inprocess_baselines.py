"""DACBench's own baselines in-process: the reference that `dacbench:...` runs are compared with.

It calls DACBench's `run_random`, `run_static`, `run_optimal` and `run_dynamic_policy` (from
`dacbench.run_baselines`, unchanged) one seed at a time, with the seeding a server documents:
`random` and numpy's legacy RNG seeded with the seed before each call, and the action space
seeded with it (DACBench leaves it unseeded, so its random baseline never repeats). Benchmarks
without `get_benchmark` (ToySGD, CMAES), on which run_baselines stops with AttributeError, get
the server's stand-in: `set_seed(seed)` then `get_environment()`. Nothing else is changed.
Standalone (stdlib, numpy, DACBench), so it runs in a venv holding exactly an image's pins:

  python inprocess_baselines.py OUTDIR BENCHMARK KIND EPISODES SEED... [--fixed F] [--action A]

KIND is random, static, optimal or dynamic; the logs go to OUTDIR in DACBench's layout.
"""

from __future__ import annotations

import argparse
import json
import random
import warnings
from pathlib import Path


def seed_globals(seed: int) -> None:
    import numpy

    random.seed(seed)
    numpy.random.seed(seed)


def seed_action_spaces(cls) -> None:
    """`cls.get_benchmark` that also seeds the env's action space (and exists for every class)."""
    original = getattr(cls, "get_benchmark", None)

    def get_benchmark(self, *args, seed=0, **kwargs):
        if original is not None:
            env = original(self, *args, seed=seed, **kwargs)
        else:
            self.set_seed(seed)
            env = self.get_environment()
        env.action_space.seed(seed)
        return env

    cls.get_benchmark = get_benchmark


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir", type=Path)
    parser.add_argument("benchmark")
    parser.add_argument("kind", choices=["random", "static", "optimal", "dynamic"])
    parser.add_argument("episodes", type=int)
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--fixed", type=int, default=0)
    parser.add_argument("--action", type=json.loads)
    args = parser.parse_args()

    from dacbench import benchmarks, run_baselines

    seed_action_spaces(getattr(benchmarks, args.benchmark))
    for seed in args.seeds:
        seed_globals(seed)
        if args.kind == "random":
            run_baselines.run_random(args.outdir, args.benchmark, args.episodes, [seed],
                                     args.fixed)
        elif args.kind == "static":
            run_baselines.run_static(args.outdir, args.benchmark, args.action, args.episodes,
                                     [seed])
        elif args.kind == "optimal":
            run_baselines.run_optimal(args.outdir, args.benchmark, args.episodes, [seed])
        else:
            run_baselines.run_dynamic_policy(args.outdir, args.benchmark, args.episodes, [seed])


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main()
