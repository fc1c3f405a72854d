#!/usr/bin/env python
"""What the experiment layer costs: the same container trials run as a plain sweep (the
baseline, measured in the same run), as an evaluate step, and as a grid tune step in batches.

    python scripts/bench_experiment.py                          # local runtime
    python scripts/bench_experiment.py --image /path/to/base.sif --benchmark Luby

Each trial is `--episodes` episodes of one seed; the tune step evaluates `--candidates`
candidates (static actions) on `--seeds` seeds, `--batch` candidates at a time, so it runs as
many trials as the sweep and the evaluate step. Prints wall times and ratios to the sweep;
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dacbench_remote.experiments import run_experiment  # noqa: E402
from dacbench_remote.sweeps import run_sweep  # noqa: E402


def runtime_table(image: Path | None) -> str:
    return f'[runtime]\nkind = "bwrap"\nimage = "{image}"\n' if image else \
        '[runtime]\nkind = "local"\n'


def timed(function) -> float:
    started = time.perf_counter()
    result = function()
    if not result.ok:
        raise SystemExit(f"a run failed: {result}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="Luby")
    parser.add_argument("--image", type=Path, help="a .sif for bwrap (default: local runtime)")
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    agents = [f"static:{a}" for a in range(args.candidates)]
    head = f'time_limit = 600\n{runtime_table(args.image)}[executor.local]\nworkers = {args.workers}\n'
    with tempfile.TemporaryDirectory(prefix="bench-experiment-") as tmp:
        base = Path(tmp)
        sweep = base / "sweep.toml"
        sweep.write_text(f'name = "sweep"\nepisodes = {args.episodes}\n{head}'
                         f'[grid]\nbenchmarks = ["{args.benchmark}"]\nagents = {agents}\n'
                         f'seeds = {{ start = 0, count = {args.seeds} }}\n'.replace("'", '"'))
        evaluate = base / "evaluate.toml"
        evaluate.write_text(f'name = "evaluate"\n{head}[steps.evaluate]\nkind = "evaluate"\n'
                            f'benchmark = "{args.benchmark}"\npolicies = {agents}\n'
                            f'seeds = {{ start = 0, count = {args.seeds} }}\n'
                            f'episodes = {args.episodes}\n'.replace("'", '"'))
        tune = base / "tune.toml"
        tune.write_text(f'name = "tune"\n{head}[steps.tune]\nkind = "tune"\n'
                        f'benchmark = "{args.benchmark}"\nagent = "static:{{a}}"\n'
                        f'seeds = {{ start = 0, count = {args.seeds} }}\n'
                        f'episodes = {args.episodes}\nsampler = "grid"\nbatch = {args.batch}\n'
                        f'[steps.tune.space]\na = {{ type = "int", low = 0, '
                        f'high = {args.candidates - 1} }}\n')
        trials = args.candidates * args.seeds
        baseline = timed(lambda: run_sweep(sweep, workers=args.workers))
        evaluated = timed(lambda: run_experiment(evaluate))
        tuned = timed(lambda: run_experiment(tune))
        cached = timed(lambda: run_experiment(tune))
    where = f"bwrap {args.image.name}" if args.image else "local runtime"
    print(f"{trials} trials of {args.benchmark} ({args.episodes} episodes each), "
          f"{args.workers} workers, {where}")
    print(f"{'run':<36}{'wall s':>8}{'vs sweep':>10}")
    for label, seconds in (("sweep (baseline)", baseline), ("evaluate step", evaluated),
                           (f"tune step, grid, batch {args.batch}", tuned),
                           ("tune step again (cached)", cached)):
        print(f"{label:<36}{seconds:>8.2f}{seconds / baseline:>9.2f}x")


if __name__ == "__main__":
    main()
