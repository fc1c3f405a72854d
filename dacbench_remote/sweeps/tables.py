"""The sweep's tables: each episode of each completed trial in results.csv, trials in trials.csv.

Built from the sweep's journal (the record of finished trials), so they can be rebuilt at any
time. Parquet is written too when pyarrow happens to be installed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .._sys.files import atomic_output, atomic_write_json, atomic_write_text
from .sweepdir import SweepDir, read_json
from .trial import DONE, Trial

RESULT_COLUMNS = [
    "sweep", "run_id", "trial_id", "benchmark", "experiment", "config", "kwargs", "agent",
    "seed", "episode", "episode_seed", "return", "length", "wall_time", "terminated",
    "truncated", "runtime", "image_sha256", "host",
]
TRIAL_COLUMNS = [
    "trial_id", "benchmark", "experiment", "config", "kwargs", "agent", "seed", "episodes",
    "status", "run_id", "mean_return", "wall_time", "host", "retries", "error",
]
PENDING = "pending"


def episode_rows(layout: SweepDir, trials: list[Trial]) -> list[dict]:
    """Rows of all trials recorded as done, in trial order then episode order."""
    recorded = layout.results().latest_all()
    rows = []
    for trial in trials:
        record = recorded.get(trial.id)
        if record is not None and record.outcome.status == DONE:
            rows += sorted(record.rows, key=lambda row: row.get("episode", 0))
    return rows


def trial_rows(layout: SweepDir, trials: list[Trial]) -> list[dict]:
    """One row per trial: its parameters and recorded outcome (or `pending`)."""
    outcomes = layout.outcomes()
    rows = []
    for trial in trials:
        outcome = outcomes.get(trial.id)
        row = {
            "trial_id": trial.id, "benchmark": trial.benchmark, "experiment": trial.experiment,
            "config": trial.config, "kwargs": trial.kwargs, "agent": trial.agent,
            "seed": trial.seed, "episodes": trial.episodes, "status": PENDING,
        }
        if outcome is not None:
            row.update(status=outcome.status, run_id=outcome.run_id,
                       mean_return=outcome.mean_return, wall_time=round(outcome.wall_time, 3),
                       host=outcome.host, retries=len(outcome.retries), error=outcome.error)
        rows.append(row)
    return rows


def to_csv(rows: list[dict], columns: list[str]) -> str:
    """The rows as CSV: None as empty (csv's own), dicts and lists as JSON, the rest as str()."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    structured = (dict, list)
    writer.writerows([_as_json(v) if isinstance(v, structured) else v
                      for v in map(row.get, columns)] for row in rows)
    return buffer.getvalue()


def _as_json(value: dict | list) -> str:
    # Most trials' config and kwargs are empty: 20,000 json.dumps calls for "{}" cost 0.06 s.
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value, sort_keys=True)


def write_tables(layout: SweepDir, trials: list[Trial] | None = None, *,
                 rows: list[dict] | None = None) -> list[Path]:
    """(Re)write results.csv, trials.csv and, with pyarrow, results.parquet; return their paths.

    `rows`: the episode rows of `trials` when the caller has them already. Afterwards
    tables.json records what the tables were made from (see `tables_state`).
    """
    trials = layout.trials() if trials is None else trials
    rows = episode_rows(layout, trials) if rows is None else rows
    atomic_write_text(layout.results_csv, to_csv(rows, RESULT_COLUMNS))
    atomic_write_text(layout.trials_csv, to_csv(trial_rows(layout, trials), TRIAL_COLUMNS))
    written = [layout.results_csv, layout.trials_csv]
    if _write_parquet(rows, layout.results_parquet):
        written.append(layout.results_parquet)
    atomic_write_json(layout.tables_stamp, {"source": _source(layout),
                                            "files": [p.name for p in written]}, durable=False)
    return written


@dataclass(frozen=True)
class TablesState:
    """Whether the tables, and report.png, were made from the journal and the trial list as
    they are now (tables.json says so): then report need not write them again."""

    tables: bool
    plot: bool


def tables_state(layout: SweepDir) -> TablesState:
    """Read tables.json (once) and compare it with the journal and the trial list."""
    stamp = read_json(layout.tables_stamp)
    if not isinstance(stamp, dict) or stamp.get("source") != _source(layout):
        return TablesState(False, False)
    names = list(stamp.get("files") or [])
    tables = bool(names) and all((layout.path / name).exists() for name in names)
    return TablesState(tables, tables and bool(stamp.get("plot")) and layout.plot.exists())


def mark_plotted(layout: SweepDir) -> None:
    """Record in tables.json that report.png was drawn from what the tables were made from."""
    stamp = read_json(layout.tables_stamp)
    if isinstance(stamp, dict) and stamp.get("source") == _source(layout):
        atomic_write_json(layout.tables_stamp, {**stamp, "plot": True}, durable=False)


def _source(layout: SweepDir) -> dict:
    """What the tables are made from: how far each journal file was read, and trials.json."""
    position = layout.results().position()
    try:
        listing = os.stat(layout.trials_index)
        trials = [listing.st_mtime_ns, listing.st_size]
    except FileNotFoundError:
        trials = None
    return {"journal": position, "trials": trials}


# results.parquet's column types: fixed, so that a column that is empty in this sweep (no
# image, say) still has its type, and so that the table is built without pandas (below).
RESULT_TYPES = {
    "seed": "int64", "episode": "int64", "episode_seed": "int64", "return": "float64",
    "length": "int64", "wall_time": "float64", "terminated": "bool_", "truncated": "bool_",
}


def parquet_modules():
    """pyarrow with its json and parquet modules, or None when pyarrow is not installed."""
    try:
        import pyarrow
        import pyarrow.json
        import pyarrow.parquet
    except ImportError:
        return None
    return pyarrow


def import_parquet_writer_in_background() -> None:
    """Load pyarrow's Parquet writer (about 0.1 s) in a thread while the caller waits for
    something else, so that write_tables at the end does not."""
    threading.Thread(target=parquet_modules, name="load-parquet-writer", daemon=True).start()


def _write_parquet(rows: list[dict], path: Path) -> bool:
    """Write results.parquet, parsed by pyarrow from the rows as JSON lines with a fixed schema.

    Why JSON: pyarrow imports pandas (0.3-0.4 s) to build an array from Python objects, not to
    parse JSON; the values are the journal's own JSON values, so nothing changes on the way.
    """
    pyarrow = parquet_modules()
    if pyarrow is None:
        return False
    schema = pyarrow.schema([(name, getattr(pyarrow, RESULT_TYPES.get(name, "string"))())
                             for name in RESULT_COLUMNS])
    lines = "".join(json.dumps(row) + "\n" for row in rows)  # other keys: ignored
    try:
        table = schema.empty_table() if not rows else pyarrow.json.read_json(
            io.BytesIO(lines.encode()),
            parse_options=pyarrow.json.ParseOptions(explicit_schema=schema,
                                                    unexpected_field_behavior="ignore"))
    except pyarrow.ArrowInvalid:  # a value of another type than its column's (an older row)
        table = pyarrow.table({name: [row.get(name) for row in rows] for name in RESULT_COLUMNS})
    with atomic_output(path, durable=False, perms=0o666) as tmp:
        pyarrow.parquet.write_table(table, tmp)
    return True


def read_results_csv(path: str | Path) -> list[dict]:
    """results.csv back as dicts with numbers restored (for tests, reports and notebooks)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for name in ("seed", "episode", "episode_seed", "length"):
            if row.get(name):
                row[name] = int(row[name])
        for name in ("return", "wall_time"):
            if row.get(name):
                row[name] = float(row[name])
    return rows
