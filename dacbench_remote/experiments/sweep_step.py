"""The `sweep` step: a sweep's grid (and explicit trials), exactly as `sweep.toml` writes them,
as a step of an experiment, run on the step's executor."""

from __future__ import annotations

import statistics
from pathlib import Path

from .._sys.files import sha256_file
from ..sweeps import spec as sweep_spec
from ..sweeps.trial import canonical_json
from .containers import episode_rows, failures, image_records, run_trials, write_results
from .step import ANY, Params, StepContext, StepKind


class SweepStep(StepKind):
    name = "sweep"
    keys = frozenset({"grid", "trials", "episodes"})

    def check(self, params: Params) -> dict:
        if not params.has("grid") and not params.has("trials"):
            raise params.error("grid", "a sweep step needs a [grid] or [[trials]] entries, as "
                                       "in sweep.toml")
        checked = {"episodes": params.integer("episodes", 1, minimum=1)}
        for name in ("grid", "trials"):
            if params.has(name):
                checked[name] = params.table[name]
        if params.resolved or not _referenced(checked):
            self.expand(checked, params)  # checks every entry as a sweep spec does
        return checked

    def expand(self, checked: dict, params: Params, step=None) -> list:
        """The step's trials, built and checked by the sweeps' own spec functions."""
        where = sweep_spec._Where(params.where.filename)
        defaults = {"episodes": checked["episodes"],
                    "time_limit": step.time_limit if step else sweep_spec.DEFAULT_TIME_LIMIT,
                    "retries": step.retries if step else 0,
                    "runtime": step.runtime if step else sweep_spec.RuntimeOptions()}
        trials = []
        try:
            if "grid" in checked:
                trials += sweep_spec._grid(checked["grid"], where, params.base, defaults)
            if "trials" in checked:
                trials += sweep_spec._explicit(checked["trials"], where, params.base, defaults)
            sweep_spec._check_unique(trials, where)
        except Exception as exc:  # name the step: the sweep's keys sit under it
            raise params.error("grid" if "grid" in checked else "trials",
                               str(exc).split(": ", 1)[-1]) from exc
        return trials

    def outputs(self, params: dict) -> dict:
        return {"kind": ANY, "results": ANY, "results_sha256": ANY, "summary": ANY}

    def images(self, step, params: dict, base: Path) -> list[dict]:
        trials = self.expand(params, Params(params, "", step.key, base, resolved=True), step)
        return image_records(step, [(t.benchmark, t.experiment) for t in trials])

    def run(self, ctx: StepContext) -> dict:
        params = Params(ctx.params, ctx.experiment.path.name, ctx.step.key,
                        ctx.experiment.path.resolve().parent, resolved=True)
        trials = self.expand(ctx.params, params, ctx.step)
        outcomes = run_trials(ctx, trials)
        rows = []
        for trial in trials:
            rows += episode_rows(ctx, trial, outcomes[trial.id], policy=trial.agent,
                                 parameters=canonical_json({"variant": trial.variant()}))
        results = ctx.dir / "results.csv"
        write_results(results, rows)
        failed = failures(outcomes, trials)
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(trials)} trials of step {ctx.step.name} "
                               f"did not finish: {failed[0]}")
        groups: dict[str, list[float]] = {}
        for row in rows:
            groups.setdefault(f"{row['benchmark']} {row['agent']}", []).append(row["return"])
        return {"kind": self.name, "results": str(results),
                "results_sha256": sha256_file(results),
                "summary": {k: statistics.fmean(v) for k, v in groups.items()}}


def _referenced(value) -> bool:
    return "${" in canonical_json(value)
