"""`python -m dacbench_remote.rl`: what the agent image's runscript starts (the host does this).

Reads the job, trains or evaluates against the server at --socket, and writes the result file
(ok, or the error as an error payload) before it exits: 0 when the job succeeded, 1 when it
failed. It exits at once when its stdin (the host's lifeline) closes.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback
from pathlib import Path

from .._sys.files import atomic_write_json
from ..wire.replies import error_payload
from .job import PROGRESS_NAME, RESULT_NAME, AgentJob
from .trainer import print_progress, run_job

# Exit status when the lifeline closed: the host is gone, nobody waits for a result.
HOST_GONE = 70


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dacbench_remote.rl",
        description="Train a Stable-Baselines3 agent on (or evaluate a saved one against) the "
        "benchmark served at --socket, as the job file says. Started by `dacbench-remote "
        "train`/`evaluate` in the agent image, with the job directory and the server's socket "
        "directory bound in.")
    parser.add_argument("--socket", required=True, help="the env server's control socket")
    parser.add_argument("--job", required=True, type=Path,
                        help="the job file (job.json) in the job directory, which also receives "
                        "progress.log, model.zip and result.json")
    parser.add_argument("--exit-on-stdin-close", action="store_true",
                        help="exit when standard input reaches EOF (the host's lifeline)")
    args = parser.parse_args(argv)
    if args.exit_on_stdin_close:
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    job_dir = args.job.parent
    with open(job_dir / PROGRESS_NAME, "a", buffering=1) as log:
        def progress(message: str) -> None:
            log.write(message + "\n")
            print_progress(message)

        try:
            job = AgentJob.read(args.job)
            result = {"status": "ok", **run_job(job, args.socket, job_dir, progress)}
            status = 0
        except Exception as exc:
            traceback.print_exc()
            result = {"status": "error", "error": error_payload(exc)}
            status = 1
    atomic_write_json(job_dir / RESULT_NAME, result)
    return status


def _exit_when_stdin_closes() -> None:
    # The file descriptor, not sys.stdin: a thread blocked in a buffered read would hold the
    # reader's lock, and the interpreter aborts when it cannot take it at shutdown.
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    os._exit(HOST_GONE)  # the host died: stop now (a half-saved model stays a temporary file)


if __name__ == "__main__":
    sys.exit(main())
