"""The sweep's results journal (sweeps/journal.py): group commits, what readers count, forget,
compaction, a commit that fails on a full file, and status/report reading it once."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from dacbench_remote.sweeps import SweepDir, read_results_csv, report
from dacbench_remote.sweeps.journal import JournalIndex, JournalWriter
from dacbench_remote.sweeps.trial import DONE, FAILED, Trial, TrialOutcome

REPO = Path(__file__).resolve().parents[1]


def outcome(trial_id: str, status: str = DONE, run_id: str = "r1", finished: float = 1.0):
    return TrialOutcome(trial_id, status, run_id, episodes=1, mean_return=2.0, started=0.5,
                        finished=finished)


def rows(trial_id: str, value: float = 2.0) -> list[dict]:
    return [{"trial_id": trial_id, "episode": 0, "return": value}]


def test_added_trials_are_written_by_one_commit_with_one_fsync(tmp_path: Path, monkeypatch):
    """Nothing reaches the file before the commit; the commit is one write and one fsync for all
    of them (the marker after it is written unsynced)."""
    journal = JournalWriter(tmp_path / "journal", "w", interval=60.0)
    for index in range(5):
        journal.add(outcome(f"t{index}"), rows(f"t{index}"))
    assert not journal.path.exists() and journal.pending == 5
    assert journal.seconds_until_due() == 0.0  # the first commit is due at once
    fsyncs: list[bool] = []  # per fsync: of a regular file (not of a directory)?
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(
        stat.S_ISREG(os.fstat(fd).st_mode)) or real_fsync(fd))
    committed = journal.commit()
    file_fsyncs = [regular for regular in fsyncs if regular]
    assert [r.outcome.trial_id for r in committed] == [f"t{i}" for i in range(5)]
    assert all(r.committed for r in committed) and len(file_fsyncs) == 1
    journal.add(outcome("t5"), rows("t5"))
    assert 59.0 < journal.seconds_until_due() <= 60.0  # the next one waits for the interval
    journal.close()
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [line.get("trial") for line in lines if "trial" in line] == [f"t{i}" for i in range(6)]
    assert [line["committed"] for line in lines if "committed" in line] == [5, 6]


def test_a_reader_reports_only_what_a_commit_marker_vouches_for(tmp_path: Path):
    """A Slurm driver reports a task's trial once the task's commit returned: the records before
    a marker. A record without one still counts for resume (it is in the file)."""
    directory = tmp_path / "journal"
    journal = JournalWriter(directory, "task")
    journal.add(outcome("a"), rows("a"))
    journal.commit()
    with open(journal.path, "ab") as handle:  # a commit cut short: its record, no marker yet
        handle.write(json.dumps({"trial": "b", "key": "kb", "outcome": outcome("b").to_dict(),
                                 "rows": rows("b")}).encode() + b"\n")
        handle.write(b'{"trial": "c", "key": "kc", "outc')  # and half a line
    index = JournalIndex(directory)
    assert [r.outcome.trial_id for r in index.refresh()] == ["a"]
    assert index.latest("b") is not None and index.latest("b", committed_only=True) is None
    assert index.latest("c") is None
    assert index.position() == {"task.jsonl": journal.path.stat().st_size - len(
        b'{"trial": "c", "key": "kc", "outc')}
    with open(journal.path, "ab") as handle:
        handle.write(b'\n{"committed": 2}\n')
    assert [r.outcome.trial_id for r in index.refresh()] == ["b"]  # read on from where it was
    assert sorted(index.latest_all()) == ["a", "b"]


def test_forgotten_records_do_not_count_and_a_later_run_counts_with_its_own(tmp_path: Path):
    directory = tmp_path / "journal"
    first = JournalWriter(directory, "run1")
    records = [first.add(outcome("a", FAILED), []), first.add(outcome("b"), rows("b"))]
    first.close()
    layout_index = JournalIndex(directory)
    layout_index.refresh()
    forget = JournalWriter(directory, "forget")
    forget.forget([records[0].key])
    forget.close()
    layout_index.refresh()
    assert layout_index.latest("a") is None and layout_index.latest("b") is not None
    second = JournalWriter(directory, "run2")
    second.add(outcome("a", DONE, "r2", finished=2.0), rows("a", 7.0))
    second.close()
    fresh = JournalIndex(directory)
    fresh.refresh()
    assert fresh.latest("a").outcome.run_id == "r2" and fresh.latest("a").rows == rows("a", 7.0)


def test_compaction_merges_the_files_and_keeps_what_counts(tmp_path: Path):
    directory = tmp_path / "journal"
    for task in range(4):
        journal = JournalWriter(directory, f"task{task}")
        journal.add(outcome(f"t{task}"), rows(f"t{task}", float(task)))
        journal.close()
    index = JournalIndex(directory)
    index.refresh()
    before = {t: (r.outcome.to_dict(), r.rows) for t, r in index.latest_all().items()}
    index.compact("merged")
    assert sorted(p.name for p in directory.iterdir()) == ["merged.jsonl"]
    again = JournalIndex(directory)
    again.refresh()
    assert {t: (r.outcome.to_dict(), r.rows) for t, r in again.latest_all().items()} == before


FILE_SIZE_LIMITED = """
import json, resource, signal, sys
from dacbench_remote.sweeps.journal import JournalWriter
from dacbench_remote.sweeps.trial import TrialOutcome
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
journal = JournalWriter(sys.argv[1], "w")
journal.add(TrialOutcome("small", "done", "r"), [])
journal.commit()
size = journal.path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
journal.add(TrialOutcome("big", "done", "r"), [{"pad": "z" * 1000}])
try:
    journal.commit()
except OSError as exc:
    print(json.dumps({"type": type(exc).__name__, "errno": exc.errno, "message": str(exc),
                      "pending": journal.pending, "size": journal.path.stat().st_size,
                      "before": size}))
"""


def test_a_commit_that_fails_leaves_the_file_as_it_was_and_keeps_its_trials(tmp_path: Path):
    """RLIMIT_FSIZE lets the commit's write go 100 bytes in, then EFBIG: it is cut off again, the
    trial stays queued (not reported), and the error names the file."""
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, str(tmp_path / "j")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["type"] == "ResultsWriteError" and result["errno"] == errno.EFBIG
    assert str(tmp_path / "j" / "w.jsonl") in result["message"]
    assert result["pending"] == 1 and result["size"] == result["before"]
    index = JournalIndex(tmp_path / "j")
    index.refresh()
    assert sorted(index.latest_all()) == ["small"]


def test_report_rewrites_the_tables_only_when_the_journal_changed(tmp_path: Path):
    layout = SweepDir(tmp_path / "sweep")
    layout.path.mkdir()
    trials = [Trial("gymnasium:CartPole-v1", "random", seed, 1) for seed in range(2)]
    layout.write_trials(trials)
    journal = JournalWriter(layout.journal_dir, "run")
    journal.add(outcome(trials[0].id), [{**rows(trials[0].id)[0], "seed": 0}])
    journal.commit()
    report(layout.path, plot=False)
    first = layout.results_csv.stat()
    report(layout.path, plot=False)  # nothing new: the tables are current
    assert layout.results_csv.stat().st_ino == first.st_ino
    journal.add(outcome(trials[1].id), [{**rows(trials[1].id, 5.0)[0], "seed": 1}])
    journal.close()
    summary = report(layout.path, plot=False)
    assert [r["trial_id"] for r in read_results_csv(layout.results_csv)] == [t.id for t in trials]
    assert summary.counts["done"] == 2
