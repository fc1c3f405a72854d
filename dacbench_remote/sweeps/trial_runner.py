"""`run_trial`: the one trial function every executor calls (a local worker thread, a Slurm task),
the supervisor of one trial's worker process.

It runs the trial in its own worker process (sweeps/worker.py), enforces the time limit by
stopping the worker and every server it started, and records the outcome with the trial's episode
rows in the sweep's journal (sweeps/journal.py): a trial counts as complete exactly when that
record is, and an executor reports it once the record is durable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .._sys.files import atomic_write_json
from .._sys.procfs import (
    ProcessRecord,
    argv_of,
    boot_id,
    descendants,
    hostname,
    stop_records,
    tree,
)
from .._sys.sockets import is_socket_id, remove_socket_files, socket_dir
from ..errors import ServerCrashed, ZygoteError
from ..host.servers import holds_lifeline
from ..runtimes.base import SERVER_MODULE
from ..wire.replies import type_name
from .journal import JournalWriter, writer_name
from .sweepdir import SweepDir, read_json, read_jsonl
from .trial import CANCELLED, DONE, FAILED, TIMED_OUT, Trial, TrialOutcome

# Files of an earlier, unfinished attempt that must not leak into this one.
_ATTEMPT_FILES = ("episodes.jsonl", "runner.jsonl", "error.json", "running.json", "done.json")
SNAPSHOT_INTERVAL = 1.0
# The first snapshot: a trial this short never writes running.json (its worker is ours to wait
# for, and the servers it forked die with its lifelines).
FIRST_SNAPSHOT = 0.1
# What the worker (and an agent factory, if it cares) finds in its environment.
SUPERVISOR_ENV = "DACBR_SWEEP_SUPERVISOR_PID"  # the worker exits if its parent is not this pid
TRIAL_ENV = "DACBR_SWEEP_TRIAL"
RUN_ENV = "DACBR_SWEEP_RUN_ID"
SWEEP_ENV = "DACBR_SWEEP_NAME"
ZYGOTE_ENV = "DACBR_SWEEP_ZYGOTE"  # a warm trial forks its server from this zygote
AHEAD_ENV = "DACBR_SWEEP_MAKE_AHEAD"  # "1": the slot's next trial makes the same env


def run_trial(
    trial: Trial | dict,
    sweep_dir: str | Path,
    *,
    run_id: str = "",
    sweep_name: str = "",
    cancel_event: threading.Event | None = None,
    kill_grace: float = 3.0,
    zygote: str | None = None,
    zygote_pid: int | None = None,
    worker_host=None,
    journal: JournalWriter | None = None,
    make_ahead: bool = False,
) -> TrialOutcome:
    """Run one trial to a recorded outcome: done, failed or timed_out (or cancelled, unrecorded).

    The outcome and the trial's episode rows are recorded in the sweep's journal: queued in
    `journal` for its next group commit when one is given (the caller commits, and reports the
    trial only then), else committed (durably) before this returns. Without a journal, a trial
    that is recorded already is not run again; its recorded outcome is returned.

    With a `worker_host` (sweeps.warm.WorkerHost) the worker process is forked from it instead
    of started afresh. `make_ahead` (warm trials): the next trial run with this zygote makes
    the same env, so the zygote's next spare server makes it while this trial runs. An attempt
    whose server died (ServerCrashed: killed, segfault, out of
    memory) is run again while the trial has `retries` left in this sweep run; an exception
    of the env or agent is not. Each retry is recorded (RETRIES_FILE, the outcome's `retries`).
    """
    if isinstance(trial, dict):
        trial = Trial.from_dict(trial)
    layout = SweepDir(sweep_dir)
    if journal is None:
        recorded = layout.outcome(trial.id)
        if recorded is not None:
            return recorded
    if cancel_event is not None and cancel_event.is_set():
        # A trial a stopping executor still handed out: start nothing that the stop would have
        # to catch half-started (a server's socket directory made, its process not yet seen).
        return TrialOutcome(trial.id, CANCELLED, run_id, error=NOT_STARTED)
    trial_dir = layout.trial_dir(trial.id)
    trial_dir.mkdir(parents=True, exist_ok=True)
    while True:
        outcome, rows = _attempt(trial, trial_dir, run_id, sweep_name, cancel_event, kill_grace,
                                 zygote, zygote_pid, worker_host, make_ahead)
        retried = len(recorded_retries(trial_dir, run_id))
        if outcome.status != FAILED or retried >= trial.retries or not server_died(trial_dir):
            break
        record_retry(trial_dir, outcome)
        print(f"warning: trial {trial.id} lost its server ({outcome.error.splitlines()[0]}); "
              f"retry {retried + 1} of {trial.retries}", file=sys.stderr)
    outcome.retries = recorded_retries(trial_dir, run_id)
    if outcome.status == CANCELLED:
        return outcome
    if journal is not None:
        journal.add(outcome, rows)
    else:
        own = JournalWriter(layout.journal_dir, writer_name(run_id, "trial"))
        own.add(outcome, rows)
        for record in own.close():
            layout.write_done(record, trial)
    return outcome


NOT_STARTED = ("the sweep was stopping, so the trial was not started; it runs when the sweep is "
               "resumed")
# What a worker's error.json (an error payload) names when its server died (killed, segfault,
# out of memory): the trial is run again if it has retries left. The env's own exceptions
# (RemoteError) are not.
SERVER_DEATHS = (type_name(ServerCrashed),)


RETRIES_FILE = "retries.json"  # this trial's attempts that a dead server or node ended


def recorded_retries(trial_dir: Path, run_id: str) -> list[dict]:
    """The attempts of sweep run `run_id` that ended because the server or node died."""
    entries = read_json(trial_dir / RETRIES_FILE)
    return [e for e in entries if e.get("run_id") == run_id] if isinstance(entries, list) else []


def record_retry(trial_dir: Path, outcome: TrialOutcome) -> None:
    """Record an attempt that is run again (`outcome` says how it ended)."""
    entries = read_json(trial_dir / RETRIES_FILE)
    entries = entries if isinstance(entries, list) else []
    attempt = len([e for e in entries if e.get("run_id") == outcome.run_id]) + 1
    entries.append({"run_id": outcome.run_id, "attempt": attempt, "error": outcome.error,
                    "exit_code": outcome.exit_code, "started": outcome.started,
                    "finished": outcome.finished, "host": outcome.host})
    atomic_write_json(trial_dir / RETRIES_FILE, entries)


def server_died(trial_dir: Path) -> bool:
    """True when the trial's last attempt failed because its server died."""
    error = read_json(trial_dir / "error.json")
    return isinstance(error, dict) and error.get("type") in SERVER_DEATHS


def _attempt(trial: Trial, trial_dir: Path, run_id: str, sweep_name: str,
             cancel_event: threading.Event | None, kill_grace: float, zygote: str | None,
             zygote_pid: int | None, worker_host,
             make_ahead: bool = False) -> tuple[TrialOutcome, list[dict]]:
    """One run of the trial's worker to its outcome (not recorded yet) and episode rows (those
    of a done trial; none otherwise)."""
    for name in _ATTEMPT_FILES:
        (trial_dir / name).unlink(missing_ok=True)
    atomic_write_json(trial_dir / "trial.json", trial.to_dict(), durable=False)  # rewritten

    started = time.time()
    changes: dict[str, str | None] = {
        SUPERVISOR_ENV: str(os.getpid()), TRIAL_ENV: trial.id, RUN_ENV: run_id,
        SWEEP_ENV: sweep_name, ZYGOTE_ENV: zygote or None,
        AHEAD_ENV: "1" if zygote and make_ahead else None}
    worker = None
    if worker_host is not None:
        try:
            worker = worker_host.spawn(trial_dir, run_id, changes)
        except ZygoteError as exc:  # costs speed, not the trial
            print(f"warning: {exc}; starting this trial's worker afresh", file=sys.stderr)
    if worker is None:
        env = {k: v for k, v in {**os.environ, **changes}.items() if v is not None}
        with open(trial_dir / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "dacbench_remote.sweeps.worker", str(trial_dir), run_id],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # Ctrl-C reaches the driver, which stops trials in order
            )
    watch = _Watch(worker, trial_dir / "running.json", trial.id, run_id, zygote_pid)
    stopped_by_us = _supervise(worker, watch, trial.time_limit, cancel_event, kill_grace)
    # Whatever outlived the worker (a server it could not stop) goes too, with its sockets.
    stop_records([r for r in watch.records if r.pid != worker.pid], grace=kill_grace)
    watch.remove_sockets()
    watch.clear()

    outcome = TrialOutcome(trial.id, FAILED, run_id, started=started, finished=time.time(),
                           host=hostname(), exit_code=worker.returncode)
    rows = read_jsonl(trial_dir / "episodes.jsonl")
    if stopped_by_us == TIMED_OUT:
        progress = len(read_jsonl(trial_dir / "runner.jsonl"))
        outcome.status = TIMED_OUT
        outcome.error = (f"the trial exceeded its time limit of {trial.time_limit:g} s after "
                         f"{progress} of {trial.episodes} episodes; its worker and server were "
                         "stopped")
    elif stopped_by_us == CANCELLED or _killed_from_outside(worker.returncode):
        outcome.status = CANCELLED
        outcome.error = ("the trial was stopped before it finished (cancel, Ctrl-C, scancel or "
                         "preemption); it runs again when the sweep is resumed")
    elif worker.returncode == 0 and len(rows) == trial.episodes:
        outcome.status = DONE
        outcome.episodes = len(rows)
        outcome.mean_return = sum(r["return"] for r in rows) / len(rows)
    elif worker.returncode == 0:
        outcome.error = (f"the worker finished but recorded {len(rows)} of {trial.episodes} "
                         "episodes")
    else:
        outcome.error = _failure_message(trial_dir, worker.returncode)
    return outcome, rows if outcome.status == DONE else []


class _Watch:
    """Keeps running.json up to date with the worker's process tree, for cancel and cleanup."""

    def __init__(self, worker: subprocess.Popen, path: Path, trial_id: str, run_id: str,
                 zygote_pid: int | None = None):
        self.worker, self.path, self.zygote_pid = worker, path, zygote_pid
        self.records: list[ProcessRecord] = []
        self.sockets: set[str] = set()
        self.header = {"trial_id": trial_id, "run_id": run_id, "host": hostname(),
                       "boot_id": boot_id(), "supervisor_pid": os.getpid(),
                       "started": time.time()}

    def snapshot(self) -> None:
        known = set(self.records)
        fresh = [r for r in tree(self.worker.pid) if r not in known]
        for record in fresh:
            self.sockets.update(_socket_arguments(record.pid))
        # A warm trial's server is the zygote's child whose lifeline the worker holds (the
        # zygote's other child is the spare server forked ahead for the next trial: not ours to
        # stop); its argv is the zygote's, and the zygote removes a killed child's sockets.
        fresh += [r for r in forked_children(self.zygote_pid)
                  if r not in known and holds_lifeline(self.worker.pid, r.pid)]
        if fresh or not self.path.exists():
            self.records += fresh
            atomic_write_json(self.path, {**self.header, "sockets": sorted(self.sockets),
                                          "processes": [r.to_dict() for r in self.records]},
                              durable=False)  # only while the trial runs

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def remove_sockets(self) -> None:
        remove_server_sockets(self.sockets)


def remove_server_sockets(names) -> None:
    """Sockets (and directories) of servers that were killed before they could remove them.

    Only names in our own socket directory, as `<server id>/ctl.sock` (or a bare `x.sock` of the
    older flat layout): a container may see the directory elsewhere, so its `--socket` argument
    gives the names, not the host path.
    """
    for name in names:
        parts = name.split("/")
        if len(parts) == 2 and is_socket_id(parts[0]) and parts[1].endswith(".sock"):
            remove_socket_files(socket_dir() / parts[0] / parts[1])
        elif len(parts) == 1 and name.endswith(".sock"):
            remove_socket_files(socket_dir() / name)


def forked_children(zygote_server_pid: int | None) -> list[ProcessRecord]:
    """Processes forked by the `--zygote` server started as `zygote_server_pid` (its runtime's
    process: bwrap or the interpreter itself)."""
    if zygote_server_pid is None:
        return []
    for pid in [zygote_server_pid, *descendants(zygote_server_pid)]:
        argv = argv_of(pid)
        if "--zygote" in argv and SERVER_MODULE in argv:
            return [r for r in tree(pid) if r.pid != pid]
    return []


def _socket_arguments(pid: int) -> list[str]:
    """The `--socket PATH` a server process was started with (see runtimes.base), as
    `<server id>/<file>` relative to the socket directory."""
    argv = argv_of(pid)
    if SERVER_MODULE not in argv:
        return []
    paths = [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "--socket"]
    return [f"{p.parent.name}/{p.name}" if is_socket_id(p.parent.name) else p.name
            for p in paths]


def _supervise(worker: subprocess.Popen, watch: _Watch, time_limit: float,
               cancel_event: threading.Event | None, kill_grace: float) -> str | None:
    """Wait for the worker; stop it on time-out or cancel. Returns why we stopped it, if we did."""
    deadline = time.monotonic() + time_limit
    next_snapshot = time.monotonic() + FIRST_SNAPSHOT
    reason = None
    while worker.poll() is None:
        now = time.monotonic()
        if cancel_event is not None and cancel_event.is_set():
            reason = CANCELLED
        elif now >= deadline:
            reason = TIMED_OUT
        if reason:
            break
        if now >= next_snapshot:
            watch.snapshot()
            next_snapshot = now + SNAPSHOT_INTERVAL
        try:
            worker.wait(timeout=min(0.1, max(0.0, deadline - now)))
        except subprocess.TimeoutExpired:
            continue
    if reason is None:
        return None
    watch.snapshot()
    # SIGTERM to the worker and its servers at once: a server shuts down cleanly (its sockets
    # go) even while its env is stuck in a step, and the worker, no longer waiting on it,
    # unwinds. Whatever is still there after the grace period is killed.
    stop_records(watch.records, grace=kill_grace)
    worker.wait()
    return reason


def _killed_from_outside(code: int | None) -> bool:
    """SIGTERM/SIGKILL/SIGINT that we did not send: scancel, preemption, a user's kill."""
    signals = (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP)
    codes = {-s for s in signals} | {128 + s for s in signals}
    return code in codes


def _failure_message(trial_dir: Path, code: int | None) -> str:
    error = read_json(trial_dir / "error.json")
    if isinstance(error, dict) and error.get("type"):
        short = str(error["type"]).rsplit(".", 1)[-1]  # the class, as a traceback's last line
        return f"{short}: {error.get('message', '')}".strip()
    tail = _tail(trial_dir / "worker.log")
    killed = code is not None and code < 0
    how = f"signal {signal.Signals(-code).name}" if killed else f"code {code}"
    return f"the worker exited with {how}; last output:\n{tail or '(none)'}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
