"""results.py: lines appended whole or not at all (a full disk for real), and runs read back."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dacbench_remote.errors import BadConfig, DacbenchRemoteError, ResultsWriteError
from dacbench_remote.host.results import (
    IncompleteRecordWarning,
    RunSummary,
    append_record,
    list_runs,
    read_records,
    read_run,
)
from dacbench_remote.sweeps.sweepdir import read_jsonl
from tests.needs import need_root, need_tools

REPO = Path(__file__).resolve().parents[1]


def record(run_id: str, episode: int, **extra) -> dict:
    return {"run_id": run_id, "benchmark": "Luby", "agent": "random", "episode": episode,
            "return": float(episode), **extra}


# -- writing -----------------------------------------------------------------------------------


def test_numpy_values_are_written_as_plain_json_and_other_objects_as_their_repr(tmp_path):
    path = tmp_path / "deep" / "er" / "r.jsonl"  # folders are created
    append_record(path, {"i": np.int64(3), "f": np.float32(1.5), "b": np.bool_(True),
                         "a": np.arange(3, dtype=np.uint8), "nested": {"m": np.eye(2)},
                         "other": Path("/x")})
    line = path.read_text()
    assert line.endswith("}\n") and line.count("\n") == 1
    assert json.loads(line) == {"i": 3, "f": 1.5, "b": True, "a": [0, 1, 2],
                                "nested": {"m": [[1.0, 0.0], [0.0, 1.0]]},
                                "other": "PosixPath('/x')"}


def test_a_record_must_be_a_dict(tmp_path):
    with pytest.raises(TypeError, match="a results record is a dict, not list"):
        append_record(tmp_path / "r.jsonl", [1, 2])  # type: ignore[arg-type]
    assert not (tmp_path / "r.jsonl").exists()


CONCURRENT_WRITER = """
import sys
from dacbench_remote.host.results import append_record
for i in range(200):
    append_record(sys.argv[1], {"writer": sys.argv[2], "i": i, "pad": "x" * 20000})
"""


def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "shared.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(path), str(n)],
                                cwd=REPO) for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    rows = read_records(path)
    assert len(rows) == 800
    for n in range(4):
        assert [r["i"] for r in rows if r["writer"] == str(n)] == list(range(200))


def test_full_disk_leaves_no_fragment_and_names_the_file(tmp_path, monkeypatch):
    """A real 64 KiB tmpfs filled up: the failing record is cut off, earlier ones stay whole."""
    need_root("mounting a small tmpfs to fill up")
    need_tools("mount", "umount")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        path = disk / "results.jsonl"
        writes: list[tuple[int, int]] = []
        real_write = os.write

        def spy(fd: int, data: bytes) -> int:
            written = real_write(fd, data)
            writes.append((written, len(data)))
            return written

        monkeypatch.setattr(os, "write", spy)
        appended = 0
        with pytest.raises(ResultsWriteError) as caught:
            for episode in range(1000):
                append_record(path, record("full", episode, pad="y" * 1500))
                appended += 1
        monkeypatch.undo()
        assert any(written < wanted for written, wanted in writes), \
            "the disk filled between records, so the cut-off path did not run"
        error = caught.value
        assert isinstance(error, OSError) and isinstance(error, DacbenchRemoteError)
        assert error.errno == errno.ENOSPC and error.filename == str(path)
        assert str(path) in str(error) and "No space left on device" in str(error)
        assert "Free space on its filesystem" in str(error) and "--out" in str(error)
        assert "The file is as it was before this record" in str(error)
        data = path.read_bytes()
        assert data.endswith(b"\n")
        assert [r["episode"] for r in read_records(path)] == list(range(appended))
        assert appended > 10
    finally:
        subprocess.run(["umount", str(disk)], check=True)


FILE_SIZE_LIMITED = """
import json, resource, signal, sys
from dacbench_remote.host.results import append_record
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
size = len(open(path, "rb").read())
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
try:
    append_record(path, {"run_id": "r", "episode": 2, "pad": "z" * 300})
except OSError as exc:
    print(json.dumps({"type": type(exc).__name__, "errno": exc.errno, "message": str(exc)}))
"""


def test_file_size_limit_mid_line_leaves_the_file_as_it_was(tmp_path):
    """No root needed: RLIMIT_FSIZE lets the write go 100 bytes into the line, then EFBIG."""
    path = tmp_path / "r.jsonl"
    append_record(path, record("r", 0))
    append_record(path, record("r", 1))
    before = path.read_bytes()
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["type"] == "ResultsWriteError" and outcome["errno"] == errno.EFBIG
    assert str(path) in outcome["message"] and "File too large" in outcome["message"]
    assert path.read_bytes() == before


# -- reading -----------------------------------------------------------------------------------


def write_lines(path: Path, *lines: str, newline_at_end: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


def test_a_last_line_without_newline_is_ignored_with_a_warning_naming_it(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", json.dumps(record("a", 0)), '{"run_id": "a", "epi',
                       newline_at_end=False)
    with pytest.warns(IncompleteRecordWarning, match=rf"{path}:2: the last line has no newline"):
        assert read_records(path) == [record("a", 0)]
    with pytest.warns(IncompleteRecordWarning):
        assert read_run(path) == [record("a", 0)]


def test_a_damaged_line_in_the_middle_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", json.dumps(record("a", 0)), "{not json",
                       "[1, 2]", json.dumps(record("a", 1)))
    with pytest.raises(BadConfig, match=rf"{path}:2 is not a results record"):
        read_records(path)
    with pytest.raises(BadConfig, match=rf"{path}:2 is not a results record"):
        read_run(path)
    path.write_text(path.read_text().replace("{not json\n", ""))
    with pytest.raises(BadConfig, match=rf"{path}:2 is not a results record: a JSON list"):
        read_records(path)


def test_skip_damaged_leaves_out_bad_lines_silently(tmp_path, recwarn):
    path = write_lines(tmp_path / "r.jsonl", '{"a": 1}', "garbage", '{"a": 2}', '{"a": 3',
                       newline_at_end=False)
    assert read_records(path, skip_damaged=True) == [{"a": 1}, {"a": 2}]
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]  # the sweep's reader is the same one
    assert read_jsonl(tmp_path / "absent.jsonl") == []
    assert not recwarn.list


def test_read_run_returns_the_last_run_in_episode_order(tmp_path):
    path = tmp_path / "r.jsonl"
    for line in (record("first", 0), record("first", 1), record("second", 1),
                 record("second", 0), record("first", 2)):
        append_record(path, line)
    assert [(r["run_id"], r["episode"]) for r in read_run(path)] == [("second", 0), ("second", 1)]
    assert [r["episode"] for r in read_run(path, "first")] == [0, 1, 2]
    assert list_runs(path) == [RunSummary("first", "Luby", "random", 3, 1),
                               RunSummary("second", "Luby", "random", 2, 3)]


@pytest.mark.parametrize(("lines", "message"), [
    ([], r"{path} holds no results"),
    (["", "  "], r"{path} holds no results"),
    ([json.dumps({"episode": 0})], r"{path}:1: the record has no run_id; this is not a "
                                   r"dacbench-remote results line"),
    ([json.dumps(record("a", 0)), json.dumps({"run_id": "a"})],
     r"{path}:2: the record has no episode number"),
    ([json.dumps(record("a", 0)), json.dumps(record("a", 0))],
     r"{path}:2: episode 0 of run a appears twice \(were two results files joined\?\)"),
])
def test_read_run_names_what_is_wrong(tmp_path, lines, message):
    path = write_lines(tmp_path / "r.jsonl", *lines) if lines else tmp_path / "r.jsonl"
    if not lines:
        path.write_text("")
    with pytest.raises(BadConfig, match=message.format(path=path)):
        read_run(path)


def test_unknown_run_and_missing_file_are_named(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, record("a", 0))
    append_record(path, record("b", 0))
    with pytest.raises(BadConfig, match=rf"{path} has no run 'zzz'; runs in it: a, b"):
        read_run(path, "zzz")
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(BadConfig, match=rf"cannot read results file {missing}: No such file"):
        read_run(missing)
    with pytest.raises(BadConfig, match=rf"cannot read results file {missing}"):
        list_runs(missing)


def test_the_runners_records_read_back_as_written(tmp_path):
    """What EpisodeResult.to_record writes (provenance first) comes back unchanged."""
    from dacbench_remote.host.runner import EpisodeResult

    path = tmp_path / "r.jsonl"
    results = [EpisodeResult(i, 7 + i, float(np.float32(0.25 * i)), 10, 0.5, True, False,
                             provenance={"run_id": "abc", "benchmark": "Luby", "base_seed": 7})
               for i in range(3)]
    for result in results:
        append_record(path, result.to_record())
    assert read_run(path) == [r.to_record() for r in results]
    assert path.read_text().startswith('{"run_id": "abc", "benchmark": "Luby"')
