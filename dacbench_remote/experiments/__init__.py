"""Experiments, the public API: a DAG of steps (tune, evaluate, sweep, run, report) from one
TOML spec, cached and resumable, on the local pool or Slurm through the sweeps' executors.

    result = run_experiment("examples/luby-fa.toml")   # runs what is not cached
    print(status("examples/luby-fa.toml"))             # the DAG, states, best so far
    print(report("examples/luby-fa.toml"))             # (re)writes the report steps
    cancel("examples/luby-fa.toml")                    # stop driver, jobs, containers
"""

from __future__ import annotations

from .driver import CancelResult, ExperimentResult, StepResult, cancel, run_experiment
from .expdir import ExperimentDir
from .kinds import STEP_KINDS, register_kind
from .report import ExperimentReport, report
from .spec import ExperimentSpec, StepSpec, load_experiment, parse_experiment
from .status import ExperimentStatus, status
from .step import StepContext, StepKind

__all__ = [
    "STEP_KINDS",
    "CancelResult",
    "ExperimentDir",
    "ExperimentReport",
    "ExperimentResult",
    "ExperimentSpec",
    "ExperimentStatus",
    "StepContext",
    "StepKind",
    "StepResult",
    "StepSpec",
    "cancel",
    "load_experiment",
    "parse_experiment",
    "register_kind",
    "report",
    "run_experiment",
    "status",
]
