"""The process that runs one trial: `python -m dacbench_remote.sweeps.worker TRIAL_DIR RUN_ID`.

It is a fresh process per trial so that a trial past its time limit can be killed with its
servers, and an agent's or benchmark's crash cannot take other trials with it. Warm trials get
that process by fork from a *worker host* (`python -m dacbench_remote.sweeps.worker --host`),
which imported everything once and never runs a trial itself: each trial's worker starts from
the host's untouched memory, without paying an interpreter start and imports every time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

from .._sys.files import atomic_write_json, atomic_write_text
from .._sys.procfs import die_with_parent, fresh_global_rngs, hostname
from ..errors import BadConfig
from ..host import agents, runner  # noqa: F401 - what every trial imports, imported once
from ..host.forked_env import PendingFork
from ..host.runner import RemoteRunner
from ..wire.baselines import is_baseline_spec
from ..wire.replies import error_payload
from .forked_runner import ForkedRunner, request_trial_server
from .sweepdir import DACBENCH_LOGS, read_json
from .trial import Trial
from .trial_runner import AHEAD_ENV, SUPERVISOR_ENV, SWEEP_ENV, ZYGOTE_ENV

# A warm trial and its server's fork request, sent by the worker host (request_server).
Requested = tuple[Trial, PendingFork]


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
            "instance": result.instance,
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


def run(trial_dir: Path, run_id: str, requested: Requested | None = None) -> None:
    """Start the trial's server, run its episodes, and write episodes.jsonl (complete lines).
    `requested`: the trial and its server's fork request, sent by the worker host."""

    if requested is not None:
        trial, pending = requested
    else:
        trial, pending = Trial.from_dict(read_json(trial_dir / "trial.json")), None

    zygote = os.environ.get(ZYGOTE_ENV)
    if zygote:  # a warm trial: our own server, forked from the slot's zygote
        runner = ForkedRunner(trial, zygote, first_env=not is_baseline_spec(trial.agent),
                              ahead=os.environ.get(AHEAD_ENV) == "1", pending=pending,
                              results_path=trial_dir / "runner.jsonl")
    else:
        runner = RemoteRunner(trial.benchmark, config=trial.config or None,
                              kwargs=trial.kwargs or None, experiment=trial.experiment,
                              results_path=trial_dir / "runner.jsonl", options=trial.runtime)
    try:
        runner.start()
        if is_baseline_spec(trial.agent):  # DACBench's baseline: its logs go to the trial too
            if trial.test_set or trial.instances:
                raise BadConfig(f"agent {trial.agent!r} builds its env in the server from the "
                                "config: name the test set there (test_set_path), not "
                                "use_test_set or instances")
            baseline = runner.run_baseline(trial.agent, trial.episodes, seed=trial.seed)
            baseline.write_logs(trial_dir / DACBENCH_LOGS)
            results = baseline.episodes
        else:
            if trial.test_set:
                runner.get_environment().use_test_set()
            results = runner.run(trial.agent, trial.episodes, seed=trial.seed,
                                 instances=trial.instances or None)
    finally:
        runner.close()
    rows = episode_rows(trial, results, run_id, os.environ.get(SWEEP_ENV, ""))
    # Not fsynced: the supervisor records the rows in the sweep's journal, durably, in groups.
    atomic_write_text(trial_dir / "episodes.jsonl",
                      "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows),
                      durable=False)


def run_worker(trial_dir: Path, run_id: str, requested: Requested | None = None) -> int:
    """Run one trial in this process and return its exit code; errors go to error.json."""
    # SIGTERM (time limit, cancel, scancel) unwinds so that the runner stops its server.
    stopped_by: list[int] = []

    def stop(signum, frame):
        stopped_by.append(signum)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        run(trial_dir, run_id, requested)
    except BaseException as exc:
        atomic_write_json(trial_dir / "error.json", error_payload(exc))
        traceback.print_exc()
        if stopped_by:
            # Errors while unwinding (a server already gone) must not read as the trial failing.
            return 128 + stopped_by[0]
        return 1
    return 0


def host() -> int:
    """Serve fork requests on stdin: one JSON line {"trial_dir", "run_id", "env"} per trial.

    Answers `{"pid": PID}` once the trial's worker is forked and `{"exit": CODE}` when it ended
    (CODE as subprocess reports it: negative for a signal). Exits when stdin closes.
    A warm trial's server is requested before its worker is forked (request_server): the
    zygote forks it and makes its env while the worker starts.
    """

    for line in sys.stdin.buffer:
        request = json.loads(line)
        requested = request_server(request)
        host_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            os._exit(_hosted_worker(request, host_pid, requested))
        if requested is not None:
            requested[1].close()  # the worker holds the lifeline and the answer now
        _answer({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _answer({"exit": -os.WTERMSIG(status) if os.WIFSIGNALED(status)
                 else os.WEXITSTATUS(status)})
    return 0


def request_server(request: dict) -> Requested | None:
    """Send the fork request of a warm trial's server (with its env), for the worker to be
    forked next to read the answer: the trial and that request. None when the trial has no
    zygote or makes no env of its own (DACBench's baselines), or when anything fails: then
    the worker asks itself, and reports what fails as the trial's error."""
    zygote = request["env"].get(ZYGOTE_ENV)
    if not zygote:
        return None
    try:
        trial = Trial.from_dict(read_json(Path(request["trial_dir"]) / "trial.json"))
        if is_baseline_spec(trial.agent):
            return None
        return trial, request_trial_server(trial, zygote, request["env"].get(AHEAD_ENV) == "1")
    except Exception:
        return None


def _hosted_worker(request: dict, host_pid: int, requested: Requested | None = None) -> int:
    """In a worker forked by the host: become the trial's worker (output to its worker.log)."""
    code = 1
    try:
        die_with_parent()
        if os.getppid() != host_pid:
            return 3  # the host died before we could ask to die with it
        fresh_global_rngs()  # as a worker started afresh: not the host's RNG state
        trial_dir = Path(request["trial_dir"])
        log = os.open(trial_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        for name, value in request["env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        code = run_worker(trial_dir, request["run_id"], requested)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _answer(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor and os.getppid() != int(supervisor):
        print("the sweep supervisor is gone; not starting", file=sys.stderr)
        return 3
    if args == ["--host"]:
        die_with_parent()
        return host()
    if len(args) != 2:
        print("usage: python -m dacbench_remote.sweeps.worker TRIAL_DIR RUN_ID\n"
              "       python -m dacbench_remote.sweeps.worker --host", file=sys.stderr)
        return 2
    die_with_parent()
    return run_worker(Path(args[0]), args[1])


if __name__ == "__main__":
    sys.exit(main())
