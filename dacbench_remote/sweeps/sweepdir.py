"""The sweep directory (`SweepDir`: where a sweep keeps its state on disk); its files are written
atomically (files.atomic_write_json), so that a crash never leaves one half-done.

    SWEEP_DIR/
      sweep.toml          copy of the spec of the latest run
      trials.json         every trial of the spec (ids and parameters), for status and report
      runs.jsonl          one line per sweep run (run id, executor, counts) when it starts and ends
      driver.json         the running driver (host, pid) while a run is in progress
      slurm_jobs.json     Slurm array job ids submitted by this sweep, for cancel
      slurm/              submitit's scripts and logs
      journal/            finished trials, made durable in groups (see journal.py): the record
                          of which trials are complete, with their episode rows
      trials/ID/          trial.json, worker.log, runner.jsonl (per-episode, live),
                          episodes.jsonl (the trial's rows, as its worker wrote them), error.json,
                          running.json, retries.json, done.json (a copy of its journal record,
                          written once that is durable),
                          dacbench/ (a DACBench baseline's logs: BENCHMARK/EXPERIMENT_SEED/)
      results.csv         one row per episode across all trials (results.parquet with pyarrow)
      trials.csv          one row per trial with its status and error
      report.png          return per episode per agent, one panel per benchmark
      tables.json         what the tables and report.png were made from (report skips them if
                          nothing changed)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._sys.files import atomic_write_json, atomic_write_text  # noqa: F401  (sweeps import them here)
from ..errors import BadConfig
from ..host.results import read_records
from .journal import COMPACT_ABOVE, JournalIndex, JournalWriter, TrialRecord, writer_name
from .trial import FINAL_STATES, Trial, TrialOutcome

# Where a trial of one of DACBench's baselines keeps DACBench's logs, in DACBench's layout.
DACBENCH_LOGS = "dacbench"


def read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it is missing or unreadable (e.g. mid-replace on NFS)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """The file's complete records; [] when it does not exist yet (see results.read_records).

    Read while workers append, and after crashes: damaged lines are left out, not fatal.
    """
    try:
        return read_records(path, skip_damaged=True)
    except OSError:
        return []


class SweepDir:
    """Paths inside one sweep directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self._index: JournalIndex | None = None

    def __str__(self) -> str:
        return str(self.path)

    spec = property(lambda self: self.path / "sweep.toml")
    trials_index = property(lambda self: self.path / "trials.json")
    runs = property(lambda self: self.path / "runs.jsonl")
    driver = property(lambda self: self.path / "driver.json")
    lock = property(lambda self: self.path / ".lock")
    slurm_jobs = property(lambda self: self.path / "slurm_jobs.json")
    slurm_folder = property(lambda self: self.path / "slurm")
    results_csv = property(lambda self: self.path / "results.csv")
    results_parquet = property(lambda self: self.path / "results.parquet")
    trials_csv = property(lambda self: self.path / "trials.csv")
    plot = property(lambda self: self.path / "report.png")
    tables_stamp = property(lambda self: self.path / "tables.json")
    journal_dir = property(lambda self: self.path / "journal")

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / "trials" / trial_id

    def done_file(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / "done.json"

    def running_file(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / "running.json"

    def results(self) -> JournalIndex:
        """The journal's index of finished trials, brought up to date (reads only what is new)."""
        if self._index is None:
            self._index = JournalIndex(self.journal_dir)
        self._index.refresh()
        return self._index

    def outcome(self, trial_id: str) -> TrialOutcome | None:
        """The recorded final outcome of a trial, or None if it has not completed."""
        record = self.results().latest(trial_id)
        if record is None or record.outcome.status not in FINAL_STATES:
            return None
        return record.outcome

    def outcomes(self) -> dict[str, TrialOutcome]:
        """Every completed trial's outcome, by trial id (one pass over the journal)."""
        return {trial_id: record.outcome for trial_id, record in self.results().latest_all().items()
                if record.outcome.status in FINAL_STATES}

    def episode_rows(self, trial_id: str) -> list[dict]:
        """The episode rows recorded with a completed trial (in episode order)."""
        record = self.results().latest(trial_id)
        return _in_episode_order(record.rows) if record is not None else []

    def write_done(self, record: TrialRecord, trial: Trial | None) -> None:
        """done.json: a readable copy of a committed record (the journal is what counts)."""
        data = record.outcome.to_dict()
        if trial is not None:
            data["trial"] = trial.to_dict()
        atomic_write_json(self.done_file(record.outcome.trial_id), data, durable=False)

    def forget(self, trial_ids: list[str], run_id: str) -> None:
        """Take back the recorded outcomes of these trials (durably): they count as not run."""
        index = self.results()
        keys = [r.key for t in trial_ids if (r := index.latest(t)) is not None]
        if keys:
            journal = JournalWriter(self.journal_dir, writer_name(run_id, "forget"))
            journal.forget(keys)
            journal.close()
        for trial_id in trial_ids:
            self.done_file(trial_id).unlink(missing_ok=True)

    def compact_journal(self, run_id: str) -> None:
        """Merge the journal's files into one when there are many (only while nothing writes)."""
        index = self.results()
        if index.file_count() > COMPACT_ABOVE:
            index.compact(writer_name(run_id, "compacted"))

    def trials(self) -> list[Trial]:
        """The trials of the latest run's spec; raises if this is not a sweep directory."""
        data = read_json(self.trials_index)
        if not isinstance(data, list):
            raise BadConfig(
                f"{self.path} is not a sweep directory (no readable trials.json); start one "
                "with `dacbench-remote sweep run SPEC`"
            )
        return [Trial.from_dict(item, keep_id=True) for item in data]

    def write_trials(self, trials: list[Trial]) -> None:
        """trials.json: every trial of the spec (what status and report count)."""
        atomic_write_json(self.trials_index, [t.to_dict() for t in trials])

    def job_ids(self) -> list[str]:
        data = read_json(self.slurm_jobs)
        return [str(j) for j in data] if isinstance(data, list) else []

    def add_job_id(self, job_id: str) -> None:
        ids = self.job_ids()
        if job_id not in ids:
            atomic_write_json(self.slurm_jobs, [*ids, job_id])


def _in_episode_order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: row.get("episode", 0))
