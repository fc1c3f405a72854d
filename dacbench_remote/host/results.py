"""JSONL results files, the one writer and reader: a record is one JSON object on one line.

`append_record` adds a line whole or not at all (one write(2) on an O_APPEND descriptor under
flock; a disk-full write is cut back off); readers ignore a last line without its newline.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import BadConfig, ResultsWriteError


class IncompleteRecordWarning(UserWarning):
    """A results file ends in a line without a newline: that last record is ignored."""


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One run of a results file: what `read_run(path, run_id)` would return, in brief."""

    run_id: str
    benchmark: str | None
    agent: str | None
    episodes: int
    first_line: int


def append_record(path: Path | str, record: dict) -> None:
    """Append `record` to the JSONL file `path` as one complete line (creating file and folders).

    numpy arrays and scalars are written as lists and numbers; anything else JSON cannot hold
    as its repr. Raises ResultsWriteError (an OSError) naming the file when the line could not
    be written whole; the file is then as it was before the call.
    """
    if not isinstance(record, dict):
        raise TypeError(f"a results record is a dict, not {type(record).__name__}")
    path = Path(path)
    line = (json.dumps(record, default=_jsonable) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _write_whole_line(fd, path, line, locked=_lock(fd))
    finally:
        os.close(fd)  # also releases the lock


def read_records(path: Path | str, *, skip_damaged: bool = False) -> list[dict]:
    """Every record of a JSONL file, in file order.

    A last line without a newline is ignored with an IncompleteRecordWarning; a complete line
    that is not a JSON object raises BadConfig naming the file and line. With `skip_damaged`
    (for logs read while they are written, or after a crash) both are left out silently. A
    missing or unreadable file raises the OSError.
    """
    return [record for _, record in _numbered_records(Path(path), skip_damaged)]


def list_runs(path: Path | str) -> list[RunSummary]:
    """The runs in a results file, in the order they started (BadConfig if it is not one)."""
    return _summaries(_results_lines(Path(path)))


def read_run(path: Path | str, run_id: str | None = None) -> list[dict]:
    """The records of one run, in episode order: `run_id`, or the last run started in the file.

    Raises BadConfig naming the file (and line) when it cannot be read, holds no results, has
    no such run, or has a line that is not a results record.
    """
    path = Path(path)
    numbered = _results_lines(path)
    runs = _summaries(numbered)
    if not runs:
        raise BadConfig(f"{path} holds no results")
    chosen = runs[-1].run_id if run_id is None else run_id
    records: dict[int, dict] = {}
    for number, record in numbered:
        if record["run_id"] != chosen:
            continue
        episode = record.get("episode")
        if not isinstance(episode, int):
            raise BadConfig(f"{path}:{number}: the record has no episode number; this is not a "
                            "dacbench-remote results line")
        if episode in records:
            raise BadConfig(f"{path}:{number}: episode {episode} of run {chosen} appears twice "
                            "(were two results files joined?); keep one copy of the run")
        records[episode] = record
    if not records:
        known = ", ".join(run.run_id for run in runs)
        raise BadConfig(f"{path} has no run {chosen!r}; runs in it: {known}")
    return [records[episode] for episode in sorted(records)]


def _summaries(numbered: list[tuple[int, dict]]) -> list[RunSummary]:
    runs: dict[str, RunSummary] = {}
    for number, record in numbered:
        known = runs.get(record["run_id"])
        if known is None:
            known = RunSummary(record["run_id"], record.get("benchmark"), record.get("agent"), 0,
                               number)
        runs[known.run_id] = dataclasses.replace(known, episodes=known.episodes + 1)
    return list(runs.values())


def _results_lines(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of every record; BadConfig for unreadable files or foreign lines."""
    try:
        numbered = _numbered_records(path, skip_damaged=False)
    except OSError as exc:
        raise BadConfig(f"cannot read results file {path}: {exc.strerror or exc}") from exc
    for number, record in numbered:
        if not isinstance(record.get("run_id"), str):
            raise BadConfig(f"{path}:{number}: the record has no run_id; this is not a "
                            "dacbench-remote results line")
    return numbered


def _numbered_records(path: Path, skip_damaged: bool) -> list[tuple[int, dict]]:
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail.strip() and not skip_damaged:
        warnings.warn(IncompleteRecordWarning(
            f"{path}:{len(lines) + 1}: the last line has no newline ({len(tail)} bytes; a write "
            "cut short); it is ignored"), stacklevel=3)
    numbered = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if skip_damaged:
                continue
            raise BadConfig(f"{path}:{number} is not a results record: {exc}") from exc
        numbered.append((number, record))
    return numbered


def _jsonable(value: Any) -> Any:
    """What json.dumps cannot write itself: numpy values as Python ones, the rest as repr."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def _lock(fd: int) -> bool:
    """Serialise appenders, so that finishing or undoing a short write never meets another's."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a filesystem without locks
        return False
    return True


def _write_whole_line(fd: int, path: Path, line: bytes, locked: bool) -> None:
    """Write `line` at the end; on failure cut off whatever part of it got there, then raise."""
    written = 0
    while written < len(line):
        try:
            written += os.write(fd, line[written:])
        except OSError as exc:  # the reason a write came up short shows on the next one
            raise ResultsWriteError(str(path), exc, _cut_off(fd, written)) from exc
        if written < len(line) and not locked:  # the rest could land after another's line
            cause = OSError(0, f"the write came up short ({written} of {len(line)} bytes)")
            raise ResultsWriteError(str(path), cause, _cut_off(fd, written))


def _cut_off(fd: int, written: int) -> bool:
    """Truncate the `written` bytes just appended through `fd`; False if that was not safe."""
    if written == 0:
        return True
    end = os.lseek(fd, 0, os.SEEK_CUR)  # with O_APPEND: just after the bytes we wrote
    if os.fstat(fd).st_size != end:  # someone appended after our fragment: leave theirs
        return False
    try:
        os.ftruncate(fd, end - written)
    except OSError:
        return False
    return True
