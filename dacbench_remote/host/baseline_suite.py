"""`dacbench-remote baselines`: DACBench's `run_baselines` grid (benchmarks x baselines x seeds)
with every run next to its env, each benchmark in one server of its image, and the logs written
on the host in DACBench's layout (`OUTDIR/LubyBenchmark/optimal_0/...`).

Everything that can be refused (a baseline a benchmark has no policy for, a benchmark the catalog
does not have) is refused before the first server starts.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import BadConfig, ImageNotFound
from ..images.catalog import Catalog
from ..wire.baselines import (
    check_available,
    dacbench_class_name,
    parse_baseline,
)
from .baselines import BaselineRun
from .runner import RemoteRunner

# A run that takes longer than this reports its episodes while it goes on.
EPISODE_REPORT_SECONDS = 10.0


@dataclass(frozen=True)
class Selection:
    """What run_baselines' options ask for: which baselines, with which actions."""

    random: bool = False
    fixed_random: int = 0
    static: bool = False
    actions: tuple[Any, ...] = ()
    optimal: bool = False
    dynamic: bool = False

    def specs(self, benchmark: str) -> list[str]:
        """The agent specs for `benchmark`, in run_baselines' order (random, static per
        action, optimal, dynamic); FastDownward's static actions as ints, as DACBench does."""
        specs = []
        if self.random:
            specs.append("dacbench:random" + (f":{self.fixed_random}" if self.fixed_random else ""))
        if self.static:
            integral = dacbench_class_name(benchmark) == "FastDownwardBenchmark"
            specs += ["dacbench:static:" + json.dumps(int(a) if integral else a)
                      for a in self.actions]
        if self.optimal:
            specs.append("dacbench:optimal")
        if self.dynamic:
            specs.append("dacbench:dynamic")
        return specs


@dataclass
class Summary:
    """One baseline of one benchmark over all seeds: a row of the closing table."""

    benchmark: str
    baseline: str
    returns: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def plan(benchmarks: list[str] | None, selection: Selection, catalog: Catalog | None,
         experiment: str | None, note: Callable[[str], Any]) -> list[tuple[str, list[str]]]:
    """(benchmark, agent specs) in order, all checked; BadConfig or UnknownBenchmark before any
    run. Without `benchmarks`, every DACBench benchmark of the catalog at `experiment` (its
    default version if None), skipping those without a requested policy (said through `note`).
    `catalog` None (an image or the local runtime was chosen) checks no names against it.
    """
    if not (selection.random or selection.static or selection.optimal or selection.dynamic):
        raise BadConfig("choose at least one baseline: --random, --static, --optimal or "
                        "--dyna_baseline")
    if selection.static and not selection.actions:
        raise BadConfig("--static needs the actions to play: --actions A [A ...]")
    given = benchmarks is not None
    if not given:
        if catalog is None:
            raise BadConfig("name the benchmarks (--benchmarks) when running an image or the "
                            "local runtime")
        benchmarks = _catalog_benchmarks(catalog, experiment)
    elif catalog is not None:
        for benchmark in benchmarks:
            _check_in_catalog(catalog, benchmark, experiment)
    planned = []
    for benchmark in benchmarks:
        specs = []
        for spec in selection.specs(benchmark):
            try:
                check_available(parse_baseline(spec), benchmark)
            except BadConfig as exc:
                if given:
                    raise
                note(f"skipping {benchmark}: {exc}")
                continue
            specs.append(spec)
        if specs:
            planned.append((benchmark, specs))
    if not planned:
        raise BadConfig("none of the benchmarks has the requested baselines")
    return planned


def _catalog_benchmarks(catalog: Catalog, experiment: str | None) -> list[str]:
    names = []
    for benchmark in catalog.benchmarks():
        if dacbench_class_name(benchmark) is None:
            continue
        versions = catalog.versions(benchmark)
        if any(_is_version(v, experiment) for v in versions):
            names.append(benchmark)
    if not names:
        raise ImageNotFound(f"the catalog has no DACBench benchmark at {experiment or 'its default'}")
    return names


def _is_version(version, experiment: str | None) -> bool:
    if experiment is None:
        return version.default
    return version.experiment in (experiment, f"exp:{experiment}")


def _check_in_catalog(catalog: Catalog, benchmark: str, experiment: str | None) -> None:
    """UnknownBenchmark or ImageNotFound (naming what there is) unless the catalog serves it."""
    catalog.resolve(benchmark, experiment)


def run_suite(planned: list[tuple[str, list[str]]], *, outdir: Path, seeds: list[int],
              episodes: int, runner_options: dict, report: Callable[[str], Any]
              ) -> list[Summary]:
    """Run every planned baseline for every seed, writing each run's logs under `outdir` as it
    ends (and its episodes to `outdir/results.jsonl`); `report` gets the progress lines.

    Returns:
        One Summary per benchmark and baseline.
    """
    total = sum(len(specs) for _, specs in planned) * len(seeds)
    done = 0
    summaries = []
    for benchmark, specs in planned:
        runner = RemoteRunner(benchmark, results_path=outdir / "results.jsonl", **runner_options)
        with runner:
            report(f"{benchmark}: server started ({runner.runtime.name} runtime) in "
                   f"{runner.startup_seconds:.2f} s")
            for spec in specs:
                summary = Summary(benchmark, spec.removeprefix("dacbench:"))
                summaries.append(summary)
                for seed in seeds:
                    done += 1
                    started = time.monotonic()
                    run = runner.run_baseline(
                        spec, episodes, seed,
                        progress=_episode_reporter(f"{benchmark} {spec} seed {seed}", episodes,
                                                   report))
                    directory = run.write_logs(outdir)
                    summary.benchmark = run.benchmark_class
                    summary.seeds.append(seed)
                    summary.returns += [e.return_ for e in run.episodes]
                    report(f"[{done}/{total}] {_describe(run)} ({time.monotonic() - started:.1f} s)"
                           f" -> {directory}")
    return summaries


def _describe(run: BaselineRun) -> str:
    returns = [e.return_ for e in run.episodes]
    return (f"{run.benchmark_class} {run.experiment_name}: {len(returns)} episodes, mean return "
            f"{statistics.fmean(returns):.4g}")


def _episode_reporter(what: str, episodes: int, report: Callable[[str], Any]
                      ) -> Callable[[int], None]:
    """Reports a long run's finished episodes, at most every EPISODE_REPORT_SECONDS."""
    last = time.monotonic()

    def progress(finished: int) -> None:
        nonlocal last
        if time.monotonic() - last >= EPISODE_REPORT_SECONDS:
            last = time.monotonic()
            report(f"  {what}: episode {finished}/{episodes}")

    return progress


def load_catalog() -> Catalog:
    """The catalog of the user's configuration (packaged plus catalog_dirs)."""
    return Catalog.load(load_config().catalog_dirs)

