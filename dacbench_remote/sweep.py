"""Many trials from one spec, on a local process pool or on Slurm (the public face of `sweeps/`)."""

from __future__ import annotations

from .sweeps import (
    CancelResult,
    RuntimeOptions,
    SweepDir,
    SweepReport,
    SweepResult,
    SweepSpec,
    SweepStatus,
    Trial,
    TrialOutcome,
    cancel,
    load_spec,
    parse_spec,
    read_results_csv,
    report,
    run_sweep,
    run_trial,
    status,
)

__all__ = [
    "CancelResult", "RuntimeOptions", "SweepDir", "SweepReport", "SweepResult", "SweepSpec",
    "SweepStatus", "Trial", "TrialOutcome", "cancel", "load_spec", "parse_spec",
    "read_results_csv", "report", "run_sweep", "run_trial", "status",
]
