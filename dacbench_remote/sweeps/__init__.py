"""Sweeps, the public API: many trials from one spec, on a local process pool or as one Slurm array
job.

    result = run_sweep("sweep.toml")          # runs what is not complete yet
    print(status("runs/demo"))                # while it runs, from anywhere
    print(report("runs/demo"))                # summary table, results.csv, report.png
    cancel("runs/demo")                       # stop the driver, Slurm jobs, workers, servers

The names load on first use (as the package root's do): `status` and `report` need none of what
runs trials, and a driver starts its first container before the worker's modules are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._sys.lazy import lazy_names

if TYPE_CHECKING:
    from .driver import CancelResult, SweepResult, cancel, new_run_id, run_sweep
    from .reporting import SweepReport, SweepStatus, report, status
    from .spec import SweepSpec, load_spec, parse_spec
    from .sweepdir import SweepDir
    from .tables import read_results_csv, write_tables
    from .trial import Trial, TrialOutcome
    from .trial_runner import run_trial

# Each public name with the module that defines it, imported on first use.
_LAZY = {
    "CancelResult": ".driver",
    "SweepResult": ".driver",
    "cancel": ".driver",
    "new_run_id": ".driver",
    "run_sweep": ".driver",
    "SweepReport": ".reporting",
    "SweepStatus": ".reporting",
    "report": ".reporting",
    "status": ".reporting",
    "SweepSpec": ".spec",
    "load_spec": ".spec",
    "parse_spec": ".spec",
    "SweepDir": ".sweepdir",
    "read_results_csv": ".tables",
    "write_tables": ".tables",
    "Trial": ".trial",
    "TrialOutcome": ".trial",
    "run_trial": ".trial_runner",
}

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
