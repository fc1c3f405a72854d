"""Sweeps, the public API: many trials from one spec, on a local process pool or as one Slurm array
job.

    result = run_sweep("sweep.toml")          # runs what is not complete yet
    print(status("runs/demo"))                # while it runs, from anywhere
    print(report("runs/demo"))                # summary table, results.csv, report.png
    cancel("runs/demo")                       # stop the driver, Slurm jobs, workers, servers
"""

from __future__ import annotations

from .driver import CancelResult, SweepResult, cancel, new_run_id, run_sweep
from .reporting import SweepReport, SweepStatus, report, status
from .spec import SweepSpec, load_spec, parse_spec
from .sweepdir import SweepDir
from .tables import read_results_csv, write_tables
from .trial import Trial, TrialOutcome
from .trial_runner import run_trial

__all__ = [
    "CancelResult",
    "SweepDir",
    "SweepReport",
    "SweepResult",
    "SweepSpec",
    "SweepStatus",
    "Trial",
    "TrialOutcome",
    "cancel",
    "load_spec",
    "new_run_id",
    "parse_spec",
    "read_results_csv",
    "report",
    "run_sweep",
    "run_trial",
    "status",
    "write_tables",
]
