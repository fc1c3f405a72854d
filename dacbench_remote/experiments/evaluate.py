"""The `evaluate` step: policies (agent specs, tuned ones by reference, DACBench's baselines)
on the test set or named instances over many seeds; results per instance and per seed."""

from __future__ import annotations

import statistics
from pathlib import Path

from .._sys.files import sha256_file
from ..sweeps import spec as sweep_spec
from ..sweeps.trial import canonical_json
from ..wire.baselines import is_baseline_spec
from .aggregate import bootstrap_ci
from .containers import episode_rows, failures, image_records, make_trial, run_trials, write_results
from .step import ANY, Params, StepContext, StepKind


class EvaluateStep(StepKind):
    name = "evaluate"
    keys = frozenset({"benchmark", "experiment", "config", "kwargs", "policies", "seeds",
                      "episodes", "use_test_set", "instances"})

    def check(self, params: Params) -> dict:
        checked = {
            "benchmark": params.benchmark(),
            "experiment": params.string("experiment"),
            "config": params.json_table("config"),
            "kwargs": params.json_table("kwargs"),
            "seeds": params.seeds("seeds"),
            "use_test_set": params.boolean("use_test_set", False),
            "instances": params.instances(),
            "policies": _policies(params),
        }
        _check_baselines(params, checked)
        instances = checked["instances"]
        checked["episodes"] = params.integer(
            "episodes", len(instances) if isinstance(instances, list) and instances else 1,
            minimum=1)
        return checked

    def outputs(self, params: dict) -> dict:
        return {"kind": ANY, "results": ANY, "results_sha256": ANY, "summary": ANY,
                "policies": ANY, "best_policy": ANY}

    def images(self, step, params: dict, base: Path) -> list[dict]:
        return image_records(step, [(params["benchmark"], params["experiment"])])

    def run(self, ctx: StepContext) -> dict:
        p = ctx.params
        config, test_set = test_set_config(p["config"], p["use_test_set"])
        trials = {}
        for name, agent in p["policies"].items():
            for seed in p["seeds"]:
                trials[(name, seed)] = make_trial(
                    ctx.step, benchmark=p["benchmark"], experiment=p["experiment"], agent=agent,
                    config=config, kwargs=p["kwargs"], seed=seed, episodes=p["episodes"],
                    test_set=test_set, instances=p["instances"])
        outcomes = run_trials(ctx, list(trials.values()))
        rows = []
        for (name, _seed), trial in trials.items():
            rows += episode_rows(ctx, trial, outcomes[trial.id], policy=name,
                                 parameters=canonical_json({"agent": trial.agent}))
        results = ctx.dir / "results.csv"
        write_results(results, rows)
        failed = failures(outcomes, list(trials.values()))
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(trials)} trials of step {ctx.step.name} "
                               f"did not finish: {failed[0]}")
        summary = summarise(rows)
        best = max(summary, key=lambda name: summary[name]["mean"])
        return {"kind": self.name, "results": str(results),
                "results_sha256": sha256_file(results), "summary": summary,
                "policies": p["policies"], "best_policy": best}


def test_set_config(config: dict, use_test_set: bool) -> tuple[dict, bool]:
    """The trials' config, and whether they call DACBench's use_test_set(): a config that names
    its test set (`test_set_path`) becomes the instance set itself, which every policy sees
    (DACBench's baselines too, which build their env in the server from the config); otherwise
    the env's own test set is switched to before the first episode."""
    if not use_test_set:
        return config, False
    if "test_set_path" in config:
        return {**config, "instance_set_path": config["test_set_path"]}, False
    return config, True


def summarise(rows: list[dict]) -> dict:
    """Per policy: mean and std of returns, seeds, episodes, and a 95% CI over seed means."""
    by_policy: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        by_policy.setdefault(row["policy"], {}).setdefault(row["seed"], []).append(row["return"])
    summary = {}
    for name, seeds in by_policy.items():
        returns = [r for values in seeds.values() for r in values]
        low, high = bootstrap_ci([statistics.fmean(v) for v in seeds.values()])
        summary[name] = {"mean": statistics.fmean(returns),
                         "std": statistics.stdev(returns) if len(returns) > 1 else 0.0,
                         "seeds": len(seeds), "episodes": len(returns),
                         "ci_low": low, "ci_high": high}
    return summary


def _check_baselines(params: Params, checked: dict) -> None:
    """DACBench's baselines (`dacbench:...`) build their env in the server from the config and
    follow DACBench's own instance order: the benchmark must have the policy, and the test set
    is named in the config (test_set_path), not chosen by use_test_set() or `instances`."""
    policies, benchmark = checked["policies"], checked["benchmark"]
    if not isinstance(policies, dict):
        return
    for index, (name, agent) in enumerate(policies.items()):
        if not is_baseline_spec(agent):
            continue
        if isinstance(benchmark, str) and "${" not in benchmark:
            sweep_spec._check_baseline(agent, benchmark, params.where,
                                       params.key(f"policies[{index}]"))
        config = checked["config"]
        if checked["use_test_set"] is True and isinstance(config, dict) and \
                "test_set_path" not in config:
            raise params.error("use_test_set", f"policy {name!r} ({agent}) runs in the server on "
                                               "an env it builds from the config: name the test "
                                               "set there (config.test_set_path)")
        if checked["instances"]:
            raise params.error("instances", f"policy {name!r} ({agent}) follows DACBench's own "
                                            "instance order; leave instances out (use "
                                            "use_test_set with config.test_set_path)")


def _policies(params: Params) -> dict:
    """`policies`: agent specs, or tables {name, agent}; name -> agent spec."""
    params.required("policies")
    value = params.table["policies"]
    if not isinstance(value, list) or not value:
        raise params.error("policies", "must be a non-empty array of agent specs or "
                                       "{ name = ..., agent = ... } tables")
    policies: dict[str, str] = {}
    for index, entry in enumerate(value):
        key = params.key(f"policies[{index}]")
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"name", "agent"})
            if unknown or "agent" not in entry:
                raise params.where.error(key, "a policy table has agent (required) and name")
            name, agent = entry.get("name", entry["agent"]), entry["agent"]
            if not isinstance(name, str) or not name:
                raise params.where.error(f"{key}.name", f"must be a non-empty string, got {name!r}")
        else:
            name = agent = entry
        agent = params.agent(agent, key)
        if name in policies:
            raise params.where.error(key, f"names policy {name!r} twice; give one a name")
        policies[name] = agent
    return policies
