"""Comparing `dacbench:...` runs with DACBench's own run_baselines in-process
(tests/inprocess_baselines.py, run by a given interpreter: the host's, or a venv of an image's
pins), by returns and by the PerformanceTrackingWrapper logs as DACBench's log2dataframe reads them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas.testing

from dacbench_remote.host.baselines import BaselineRun
from dacbench_remote.wire.baselines import parse_baseline

SCRIPT = Path(__file__).resolve().parent / "inprocess_baselines.py"
PERFORMANCE_LOG = "PerformanceTrackingWrapper.jsonl"
# Object addresses in DACBench's benchmark.json (functions it cannot serialise): they differ
# between any two processes.
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def reference(python: str, outdir: Path, benchmark_class: str, spec: str, episodes: int,
              seeds: list[int]) -> Path:
    """Run DACBench's baseline for `spec` in-process under `python`; returns `outdir`."""
    baseline = parse_baseline(spec)
    argv = [python, str(SCRIPT), str(outdir), benchmark_class, baseline.kind, str(episodes),
            *map(str, seeds)]
    if baseline.kind == "random":
        argv += ["--fixed", str(baseline.fixed)]
    if baseline.kind == "static":
        argv += ["--action", json.dumps(baseline.action)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, f"the in-process reference failed:\n{done.stderr[-3000:]}"
    return outdir


def performance_frame(run_dir: Path):
    """DACBench's own reading of a run's PerformanceTrackingWrapper log."""
    from dacbench.logger import load_logs, log2dataframe

    return log2dataframe(load_logs(run_dir / PERFORMANCE_LOG))


def assert_same_as_reference(run: BaselineRun, ours: Path, reference_dir: Path) -> None:
    """`run` (its logs written under `ours`) gave DACBench's in-process values: the returns and
    lengths its PerformanceTrackingWrapper logged, the same log frame, agent and benchmark."""
    mine, theirs = ours / run.log_dir, reference_dir / run.log_dir
    assert (theirs / PERFORMANCE_LOG).is_file(), f"the reference wrote no {theirs}"
    expected = performance_frame(theirs)
    assert [e.return_ for e in run.episodes] == list(expected["overall_performance"])
    assert [e.length for e in run.episodes] == [step + 1 for step in expected["step"]]
    pandas.testing.assert_frame_equal(performance_frame(mine), expected, check_exact=True)
    assert sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in theirs.iterdir())
    assert (mine / "agent.json").read_text() == (theirs / "agent.json").read_text()
    assert _ADDRESS.sub("", (mine / "benchmark.json").read_text()) == _ADDRESS.sub(
        "", (theirs / "benchmark.json").read_text())
