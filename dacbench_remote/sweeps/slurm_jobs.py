"""Asking Slurm about a sweep's array jobs (squeue) and cancelling them (scancel): what status,
cancel and the experiments need, apart from the executor that submits them.
"""

from __future__ import annotations

import shutil
import subprocess


def live_tasks(job_id: str) -> list[str] | None:
    """Array tasks of `job_id` still queued or running; None when Slurm cannot be asked."""
    try:
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # A job that finished and was purged from slurmctld's memory.
        return [] if "invalid job id" in proc.stderr.lower() else None
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def scancel(job_ids: list[str]) -> list[str]:
    """Cancel Slurm jobs (whole arrays); returns the ids scancel accepted."""
    if not job_ids or shutil.which("scancel") is None:
        return []
    proc = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
    if proc.returncode == 0:
        return list(job_ids)
    return [j for j in job_ids if j not in proc.stderr]
