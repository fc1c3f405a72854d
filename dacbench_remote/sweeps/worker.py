"""The process that runs one trial: `python -m dacbench_remote.sweeps.worker TRIAL_DIR RUN_ID`.

It is a fresh process per trial so that a trial past its time limit can be killed with its
servers, and an agent's or benchmark's crash cannot take other trials with it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

from .layout import atomic_write_json, atomic_write_text, read_json
from .procs import die_with_parent, hostname
from .supervisor import SUPERVISOR_ENV, SWEEP_ENV, ZYGOTE_ENV
from .trial import Trial


def episode_rows(trial: Trial, results: list, run_id: str, sweep: str) -> list[dict]:
    """The trial's rows of the results table: one per episode, the same columns for every trial."""
    rows = []
    fetched = trial.runtime.provenance  # the image as the sweep fetched it, if it did
    for result in results:
        provenance = getattr(result, "provenance", {}) or {}
        rows.append({
            "sweep": sweep,
            "run_id": run_id,
            "trial_id": trial.id,
            "benchmark": trial.benchmark,
            "experiment": (provenance.get("experiment") or fetched.get("experiment")
                           or trial.experiment),
            "config": json.dumps(trial.config, sort_keys=True),
            "kwargs": json.dumps(trial.kwargs, sort_keys=True),
            "agent": trial.agent,
            "seed": trial.seed,
            "episode": result.episode,
            "episode_seed": result.seed,
            "return": float(result.return_),
            "length": int(result.length),
            "wall_time": float(result.wall_time),
            "terminated": bool(result.terminated),
            "truncated": bool(result.truncated),
            "runtime": provenance.get("runtime", trial.runtime.kind),
            "image_sha256": provenance.get("image_sha256") or fetched.get("sha256"),
            "host": hostname(),
        })
    return rows


def run(trial_dir: Path, run_id: str) -> None:
    """Start the trial's server, run its episodes, and write episodes.jsonl (complete lines)."""
    from ..runner import RemoteRunner

    trial = Trial.from_dict(read_json(trial_dir / "trial.json"))
    from .warm import ForkedRunner, runner_options

    zygote = os.environ.get(ZYGOTE_ENV)
    if zygote:  # a warm trial: our own server, forked from the slot's zygote
        runner = ForkedRunner(trial, zygote, results_path=trial_dir / "runner.jsonl")
    else:
        runner = RemoteRunner(trial.benchmark, config=trial.config or None,
                              kwargs=trial.kwargs or None, results_path=trial_dir / "runner.jsonl",
                              **runner_options(trial))
    try:
        runner.start()
        results = runner.run(trial.agent, trial.episodes, seed=trial.seed)
    finally:
        runner.close()
    rows = episode_rows(trial, results, run_id, os.environ.get(SWEEP_ENV, ""))
    atomic_write_text(trial_dir / "episodes.jsonl",
                      "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dacbench_remote.sweeps.worker TRIAL_DIR RUN_ID", file=sys.stderr)
        return 2
    trial_dir, run_id = Path(args[0]), args[1]
    die_with_parent()
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor and os.getppid() != int(supervisor):
        print("the sweep supervisor is gone; not starting", file=sys.stderr)
        return 3
    # SIGTERM (time limit, cancel, scancel) unwinds so that the runner stops its server.
    stopped_by: list[int] = []

    def stop(signum, frame):
        stopped_by.append(signum)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        run(trial_dir, run_id)
    except BaseException as exc:
        atomic_write_json(trial_dir / "error.json", {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        })
        traceback.print_exc()
        if stopped_by:
            # Errors while unwinding (a server already gone) must not read as the trial failing.
            return 128 + stopped_by[0]
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
