"""The `tune` step: ask/tell optimisation over a typed search space of agent or benchmark
parameters; each candidate is scored by an aggregate of its episode returns over the given
seeds (and training instances), its trials run as containers on the step's executor, a batch
of candidates at a time."""

from __future__ import annotations

from pathlib import Path

from .._sys.files import sha256_file
from ..sweeps.sweepdir import SweepDir
from ..sweeps.trial import DONE, canonical_json
from .aggregate import AGGREGATES, aggregate
from .containers import episode_rows, failures, image_records, make_trial, run_trials, write_results
from .optimizers import HISTORY, JOURNAL, OPTIMIZERS, SAMPLERS, Candidate, make_optimizer
from .space import Parameter, fill, grid_size, parse_space, placeholders
from .step import ANY, Params, StepContext, StepKind


class TuneStep(StepKind):
    name = "tune"
    keys = frozenset({"benchmark", "experiment", "config", "kwargs", "agent", "seeds",
                      "episodes", "instances", "space", "trials", "batch", "optimizer",
                      "sampler", "direction", "aggregate", "seed"})

    def check(self, params: Params) -> dict:
        space = parse_space(params)
        checked = {
            "benchmark": params.benchmark(),
            "experiment": params.string("experiment"),
            "config": params.json_table("config"),
            "kwargs": params.json_table("kwargs"),
            "agent": params.string("agent", required=True),
            "seeds": params.seeds("seeds"),
            "instances": params.instances(),
            "optimizer": params.string("optimizer", "optuna", choices=OPTIMIZERS),
            "sampler": params.string("sampler", "tpe", choices=SAMPLERS),
            "direction": params.string("direction", "maximize", choices=("maximize", "minimize")),
            "aggregate": params.string("aggregate", "mean", choices=AGGREGATES),
            "seed": params.integer("seed", 0),
            "batch": params.integer("batch", 4, minimum=1),
            "space": [p.to_dict() | {"name": p.name} for p in space],
        }
        checked["episodes"] = params.integer(
            "episodes", len(checked["instances"]) if isinstance(checked["instances"], list)
            and checked["instances"] else None, minimum=1, required=not checked["instances"])
        used = placeholders([checked["agent"], checked["config"], checked["kwargs"]])
        for p in space:
            if p.name not in used:
                raise params.error(f"space.{p.name}", f"is used nowhere: put {{{p.name}}} into "
                                                      "agent, config or kwargs")
        size = grid_size(space)
        if checked["sampler"] == "grid" and checked["optimizer"] == "optuna":
            if size is None:
                raise params.error("sampler", "grid search needs a finite space: give float "
                                              "parameters a step")
            checked["trials"] = params.integer("trials", size, minimum=1)
            if isinstance(checked["trials"], int) and checked["trials"] > size:
                raise params.error("trials", f"is {checked['trials']}, but the grid has only "
                                             f"{size} points")
        else:
            checked["trials"] = params.integer("trials", required=True, minimum=1)
        agent = checked["agent"]
        if isinstance(agent, str) and not placeholders(agent):
            params.agent(agent, params.key("agent"))
        return checked

    def outputs(self, params: dict) -> dict:
        names = {p["name"]: ANY for p in params.get("space", [])}
        return {"kind": ANY, "best": names, "best_value": ANY, "best_agent": ANY,
                "best_config": ANY, "best_kwargs": ANY, "trials": ANY, "completed": ANY,
                "results": ANY, "results_sha256": ANY, "history": ANY, "study": ANY,
                "direction": ANY}

    def images(self, step, params: dict, base: Path) -> list[dict]:
        return image_records(step, [(params["benchmark"], params["experiment"])])

    def run(self, ctx: StepContext) -> dict:
        p = ctx.params
        space = [Parameter(**{k: (tuple(v) if k == "choices" else v) for k, v in d.items()})
                 for d in p["space"]]
        maximize = p["direction"] == "maximize"
        optimizer = make_optimizer(p["optimizer"], p["sampler"], ctx.dir, space, maximize,
                                   p["seed"], ctx.label)
        target = p["trials"]
        errors: list[str] = []
        while optimizer.told() < target:
            ctx.check_cancelled()
            stale = optimizer.pending()  # asked by a driver that died: evaluate, never re-ask
            batch = stale[:p["batch"]]
            room = target - optimizer.told() - len(stale)
            while len(batch) < p["batch"] and room > 0:
                batch.append(optimizer.ask())
                room -= 1
            trials = {c.number: self.trials(ctx, c) for c in batch}
            outcomes = run_trials(ctx, [t for ts in trials.values() for t in ts])
            for candidate in batch:
                mine = trials[candidate.number]
                if all(outcomes[t.id].status == DONE for t in mine):
                    returns = [r["return"] for t in mine
                               for r in episode_rows(ctx, t, outcomes[t.id])]
                    value = aggregate(returns, p["aggregate"])
                else:
                    value = None
                    errors += failures(outcomes, mine)
                optimizer.tell(candidate, value)
                best = optimizer.best()
                shown = "failed" if value is None else f"{value:.6g}"
                ctx.say(f"{ctx.step.name}: trial {candidate.number} {candidate.params} -> "
                        f"{shown}; best so far {best[1]:.6g}" if best else
                        f"{ctx.step.name}: trial {candidate.number} failed")
        best = optimizer.best()
        if best is None:
            raise RuntimeError(f"every candidate of step {ctx.step.name} failed; first: "
                               f"{errors[0] if errors else '(no error recorded)'}")
        rows = []
        told = [r for r in optimizer.records() if r.get("event") == "told"]
        for record in told:
            candidate = Candidate(record["number"], record["params"])
            for trial in self.trials(ctx, candidate):
                rows += episode_rows(ctx, trial, SweepDir(ctx.dir).outcome(trial.id),
                                     policy=trial.agent, parameters=canonical_json(record["params"]))
        results = ctx.dir / "results.csv"
        write_results(results, rows)
        params, value = best
        return {
            "kind": self.name, "best": params, "best_value": value,
            "best_agent": fill(p["agent"], params), "best_config": fill(p["config"], params),
            "best_kwargs": fill(p["kwargs"], params), "trials": len(told),
            "completed": sum(1 for r in told if r.get("value") is not None),
            "direction": p["direction"], "results": str(results),
            "results_sha256": sha256_file(results), "history": str(ctx.dir / HISTORY),
            "study": str(ctx.dir / JOURNAL) if p["optimizer"] == "optuna" else None,
        }

    def trials(self, ctx: StepContext, candidate: Candidate) -> list:
        """The container trials that score one candidate: one per seed."""
        p = ctx.params
        return [make_trial(ctx.step, benchmark=p["benchmark"], experiment=p["experiment"],
                           agent=fill(p["agent"], candidate.params),
                           config=fill(p["config"], candidate.params),
                           kwargs=fill(p["kwargs"], candidate.params), seed=seed,
                           episodes=p["episodes"], instances=p["instances"])
                for seed in p["seeds"]]
