"""The sweep's results journal: each finished trial is one JSON line (its outcome and its episode
rows) appended to a journal file of the process that ran it, made durable in groups.

Why a journal: an fsync per trial costs more than a short trial itself, and reading one file per
trial makes `status` of a 10,000-trial sweep take seconds. Here a writer buffers finished trials
and commits them together, one write and one fsync per commit, at most one commit per
`COMMIT_INTERVAL` second (sooner when `COMMIT_BATCH` trials wait); readers read each journal
file once and after that only what was appended.

The guarantee: a trial is reported finished (by the executor's `on_outcome`, or to a Slurm
driver that tails a task's journal) only after the commit that holds it returned from fsync, so
no crash, not even of the machine, loses a trial that was reported finished. A trial that
finished but was not committed yet when its process was killed with SIGKILL (or its machine
died) is lost and runs again on resume; a SIGTERM or Ctrl-C commits what finished first.

Files: SWEEP_DIR/journal/<writer>.jsonl. Lines: `{"trial": ID, "key": KEY, "outcome": {...},
"rows": [...]}` per trial; `{"committed": N}` after each fsync (the records before it are
durable); `{"forget": [KEY, ...]}` to take recorded outcomes back (retry_failed, resume=False).
A trial with several records (run again after it was forgotten) counts with its latest one.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._sys.procfs import hostname
from ..errors import ResultsWriteError
from .trial import TrialOutcome

COMMIT_INTERVAL = 1.0  # seconds: at most one fsync per interval ...
COMMIT_BATCH = 256  # ... unless this many finished trials wait for it
SUFFIX = ".jsonl"
# Journals a reader merges into one (see compact): a sweep that ran in many Slurm tasks.
COMPACT_ABOVE = 64


@dataclass
class TrialRecord:
    """One finished trial as a journal holds it."""

    key: str  # unique per record: `forget` names records by it
    outcome: TrialOutcome
    rows: list[dict] = field(default_factory=list)
    committed: bool = False  # its commit marker was seen (or it was written by this process)

    def to_line(self) -> bytes:
        return _line({"trial": self.outcome.trial_id, "key": self.key,
                      "outcome": self.outcome.to_dict(), "rows": self.rows})


def _line(value: dict) -> bytes:
    return (json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n").encode()


def writer_name(run_id: str, role: str = "") -> str:
    """A journal file name no other process uses: run, host, pid, role (e.g. a Slurm task)."""
    parts = [run_id, hostname(), str(os.getpid()), role, secrets.token_hex(2)]
    return "-".join(p.replace("/", "_") for p in parts if p)


class JournalWriter:
    """Appends finished trials to one journal file; `commit` makes the waiting ones durable.

    `add` may be called from any thread; `commit` is one write and one fsync for everything
    added before it. Nothing is written before the first commit (an empty run leaves no file).
    """

    def __init__(self, directory: str | os.PathLike, name: str, *,
                 interval: float = COMMIT_INTERVAL, batch: int = COMMIT_BATCH):
        self.directory = Path(directory)
        self.path = self.directory / (name + SUFFIX)
        self.interval, self.batch = interval, batch
        self._pending: list[TrialRecord] = []
        self._extra: list[bytes] = []  # forget lines waiting for the next commit
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._fd: int | None = None
        self._last_commit = -float("inf")
        self.committed = 0  # records made durable so far

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._extra)

    def add(self, outcome: TrialOutcome, rows: list[dict]) -> TrialRecord:
        """Queue a finished trial for the next commit (not durable, not to be reported yet)."""
        record = TrialRecord(secrets.token_hex(6), outcome, list(rows))
        with self._lock:
            self._pending.append(record)
        return record

    def forget(self, keys: list[str]) -> None:
        """Take the records `keys` back (at the next commit): their trials count as not run."""
        if keys:
            with self._lock:
                self._extra.append(_line({"forget": sorted(keys)}))

    def seconds_until_due(self) -> float | None:
        """How long until a commit is due; 0 when it is due now, None when nothing waits."""
        with self._lock:
            if not self._pending and not self._extra:
                return None
            if len(self._pending) >= self.batch:
                return 0.0
        return max(0.0, self._last_commit + self.interval - time.monotonic())

    def due(self) -> bool:
        return self.seconds_until_due() == 0.0

    def commit(self) -> list[TrialRecord]:
        """Write and fsync everything queued; returns the trials now durable (to report)."""
        with self._commit_lock:
            with self._lock:
                records, self._pending = self._pending, []
                extra, self._extra = self._extra, []
            if not records and not extra:
                return []
            self._last_commit = time.monotonic()
            data = b"".join(extra) + b"".join(r.to_line() for r in records)
            fd = self._open()
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                # Disk full, say: cut off what got there (we are the file's one writer), so the
                # next commit does not start in the middle of a line; the trials stay queued.
                try:
                    os.ftruncate(fd, size)
                    rolled_back = True
                except OSError:
                    rolled_back = False
                with self._lock:
                    self._pending[:0], self._extra[:0] = records, extra
                raise ResultsWriteError(str(self.path), exc, rolled_back) from exc
            self.committed += len(records)
            # Readers that report (a Slurm driver) take only what a marker vouches for.
            _write_all(fd, _line({"committed": self.committed}))
            for record in records:
                record.committed = True
            return records

    def close(self) -> list[TrialRecord]:
        """Commit what waits and close the file; returns the trials that commit made durable."""
        records = self.commit()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return records

    def _open(self) -> int:
        if self._fd is None:
            created = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
            if created:
                _fsync_dir(self.directory.parent)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
            _fsync_dir(self.directory)  # the new file's name is durable with its first records
        return self._fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the data is synced
        pass
    finally:
        os.close(fd)


class _FileState:
    """How far a reader got in one journal file."""

    def __init__(self):
        self.offset = 0
        self.uncommitted: list[TrialRecord] = []  # complete lines not yet vouched for by a marker


class JournalIndex:
    """Every trial's latest record, from all journal files of a sweep; `refresh` reads only what
    was appended since the last call."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._files: dict[str, _FileState] = {}
        self._records: dict[str, list[TrialRecord]] = {}
        self._forgotten: set[str] = set()
        self._keys: set[str] = set()

    def refresh(self) -> list[TrialRecord]:
        """Read what was appended; returns the records that became committed just now."""
        try:
            names = sorted(n for n in os.listdir(self.directory)
                           if n.endswith(SUFFIX) and not n.startswith("."))
        except FileNotFoundError:
            return []
        newly: list[TrialRecord] = []
        for name in names:
            newly += self._read(name)
        return newly

    def _read(self, name: str) -> list[TrialRecord]:
        state = self._files.setdefault(name, _FileState())
        try:
            with open(self.directory / name, "rb") as handle:
                handle.seek(state.offset)
                data = handle.read()
        except FileNotFoundError:  # merged away by compact() since the listing
            return []
        end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
        state.offset += end
        newly: list[TrialRecord] = []
        for entry in _entries(data[:end]):
            if not isinstance(entry, dict):
                continue
            if "committed" in entry:
                for record in state.uncommitted:
                    record.committed = True
                newly += state.uncommitted
                state.uncommitted = []
            elif "forget" in entry:
                self._forgotten.update(entry["forget"])
            elif "outcome" in entry:
                record = _record(entry)
                if record is not None and record.key not in self._keys:
                    self._keys.add(record.key)
                    self._records.setdefault(record.outcome.trial_id, []).append(record)
                    state.uncommitted.append(record)
        return [r for r in newly if r.key not in self._forgotten]

    def latest(self, trial_id: str, committed_only: bool = False) -> TrialRecord | None:
        """The trial's record that counts: the latest finished one that was not forgotten."""
        best = None
        for record in self._records.get(trial_id, ()):
            if record.key in self._forgotten or (committed_only and not record.committed):
                continue
            if best is None or record.outcome.finished >= best.outcome.finished:
                best = record
        return best

    def latest_all(self) -> dict[str, TrialRecord]:
        """Every trial's record that counts, by trial id."""
        found = {}
        for trial_id in self._records:
            record = self.latest(trial_id)
            if record is not None:
                found[trial_id] = record
        return found

    def position(self) -> dict[str, int]:
        """How far this index has read each journal file: equal positions, equal contents."""
        return {name: state.offset for name, state in sorted(self._files.items())}

    def file_count(self) -> int:
        return len(self._files)

    def compact(self, name: str) -> None:
        """Merge all journal files into one named `name` (written durably, then the others are
        removed): what counts stays the same. Only while nothing else writes to the journal."""
        self.refresh()
        merged = [self.latest(t) for t in self._records]
        data = b"".join(r.to_line() for r in merged if r is not None)
        target = self.directory / (name + SUFFIX)
        temporary = self.directory / f".{name}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data + _line({"committed": len(merged)}))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _fsync_dir(self.directory)
        for old in list(self._files):
            if old != target.name:
                (self.directory / old).unlink(missing_ok=True)
        self.__init__(self.directory)
        self.refresh()


def _entries(data: bytes) -> list:
    """The JSON values of complete lines: parsed as one array (one call for thousands of
    lines), or line by line, skipping a line cut short by a crash and appended after."""
    lines = data.splitlines()
    try:
        return json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        pass
    entries = []
    for raw in lines:
        try:
            entries.append(json.loads(raw))
        except ValueError:
            continue
    return entries


def _record(entry: dict) -> TrialRecord | None:
    try:
        outcome = TrialOutcome.from_dict(entry["outcome"])
        return TrialRecord(str(entry["key"]), outcome, list(entry.get("rows") or []))
    except (KeyError, TypeError, ValueError):
        return None
