"""`status`: an experiment's DAG with each step's state and progress (trials finished of the
trials known, the tune step's trials told and best so far), and whether its driver runs. Cheap:
it reads the files the driver and the trials write, so it works from any shell while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .._sys.procfs import ProcessRecord, boot_id, hostname
from ..sweeps.sweepdir import SweepDir, read_json, read_jsonl
from .driver import experiment_dir
from .optimizers import HISTORY
from .spec import parse_experiment


@dataclass
class StepStatus:
    name: str
    kind: str
    needs: tuple[str, ...]
    state: str
    trials_finished: int = 0
    trials_known: int = 0
    tune: dict = field(default_factory=dict)  # told, target, best value and parameters
    error: str | None = None

    def line(self) -> str:
        needs = f" <- {', '.join(self.needs)}" if self.needs else ""
        text = f"{self.name} [{self.kind}]{needs}: {self.state}"
        if self.trials_known:
            text += f", trials {self.trials_finished}/{self.trials_known} finished"
        if self.tune:
            text += f", tune {self.tune['told']}/{self.tune['target']} told"
            if self.tune.get("best_value") is not None:
                text += (f", best so far {self.tune['best_value']:.6g} at "
                         f"{self.tune['best_params']}")
        if self.error:
            text += f"\n      {self.error.strip().splitlines()[0]}"
        return text


@dataclass
class ExperimentStatus:
    directory: Path
    driver: str
    steps: list[StepStatus]

    def __str__(self) -> str:
        """The steps in DAG order, each indented one level deeper than its deepest need."""
        lines = [f"experiment {self.directory}", f"driver: {self.driver}"]
        depth: dict[str, int] = {}
        for step in self.steps:
            depth[step.name] = 1 + max((depth.get(n, 0) for n in step.needs), default=0)
            lines.append("  " * depth[step.name] + step.line())
        return "\n".join(lines)


def status(experiment: str | Path) -> ExperimentStatus:
    """How far an experiment (its spec file or directory) is, while it runs or after."""
    layout = experiment_dir(experiment)
    spec = parse_experiment(layout.spec.read_text(encoding="utf-8"), layout.spec)
    steps = []
    for name, step in spec.steps.items():
        state = layout.state(name)
        shown = StepStatus(name, step.kind, step.needs, state.get("state", "waiting"),
                           error=state.get("error"))
        sweep = SweepDir(layout.step_dir(name))
        known = read_json(sweep.trials_index)
        if isinstance(known, list):
            shown.trials_known = len(known)
            shown.trials_finished = sum(1 for t in known if sweep.outcome(t["id"]) is not None)
        if step.kind == "tune":
            records = read_jsonl(layout.step_dir(name) / HISTORY)
            told = [r for r in records if r.get("event") == "told"]
            valued = [r for r in told if r.get("value") is not None]
            maximize = step.params.get("direction", "maximize") == "maximize"
            best = (max if maximize else min)(valued, key=lambda r: r["value"]) if valued else None
            shown.tune = {"told": len(told), "target": step.params.get("trials"),
                          "best_value": best["value"] if best else None,
                          "best_params": best["params"] if best else None}
        steps.append(shown)
    return ExperimentStatus(layout.path, _driver(layout), steps)


def _driver(layout) -> str:
    data = read_json(layout.driver)
    if not isinstance(data, dict):
        return "not running"
    where = f"pid {data.get('pid')} on {data.get('host')}, run {data.get('run_id')}"
    if (data.get("host"), data.get("boot_id")) == (hostname(), boot_id()) and \
            not ProcessRecord(int(data["pid"]), int(data["start"])).alive():
        return f"not running (the last run, {where}, ended without cleaning up)"
    return f"running ({where})"
