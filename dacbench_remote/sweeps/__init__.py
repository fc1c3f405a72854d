"""Sweeps, the public API: many trials from one spec, on a local process pool or as one Slurm array
job (`dacbench_remote.sweep` is an alias of this module).

    result = run_sweep("sweep.toml")          # runs what is not complete yet
    print(status("runs/demo"))                # while it runs, from anywhere
    print(report("runs/demo"))                # summary table, results.csv, report.png
    cancel("runs/demo")                       # stop the driver, Slurm jobs, workers, servers

Each public name is imported from its module on first use, so that a trial's worker process
(`python -m dacbench_remote.sweeps.worker`) and the command's parser load only what they need.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module of this package that defines it.
_PUBLIC = {
    "run_sweep": "driver", "cancel": "driver", "SweepResult": "driver",
    "CancelResult": "driver", "new_run_id": "driver",
    "status": "reporting", "report": "reporting", "SweepStatus": "reporting",
    "SweepReport": "reporting",
    "read_results_csv": "tables", "write_tables": "tables",
    "SweepSpec": "spec", "load_spec": "spec", "parse_spec": "spec",
    "SweepDir": "sweepdir",
    "Trial": "trial", "TrialOutcome": "trial", "RuntimeOptions": "trial",
    "run_trial": "trial_runner",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
