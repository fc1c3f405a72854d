"""`dacbench-remote baselines` (host/baseline_suite, cli): DACBench's run_baselines with every run
next to its env. Here the servers run in subprocesses of this interpreter (the local runtime,
DACBench 0.5.6 installed here); tests/integration/test_baselines.py runs the command on images.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacbench_remote.cli import main
from dacbench_remote.host.baseline_suite import Selection, load_catalog, plan
from tests.baseline_reference import performance_frame, reference
from tests.needs import need_module

OPTIONS = ["--seeds", "0", "1", "--num_episodes", "3"]


def files_under(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_the_command_writes_what_dacbench_s_own_command_writes(tmp_path, capsys):
    """Optimal policies need no seeding beyond run_baselines' own: DACBench's unchanged command
    is the reference, file for file."""
    need_module("dacbench")
    arguments = ["--benchmarks", "LubyBenchmark", "FunctionApproximationBenchmark", "--optimal",
                 *OPTIONS]
    done = subprocess.run([sys.executable, "-m", "dacbench.run_baselines", *arguments,
                           "--outdir", str(tmp_path / "dacbench")], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr[-3000:]
    ours = tmp_path / "ours"
    assert main(["baselines", *arguments, "--outdir", str(ours), "--runtime", "local"]) == 0
    captured = capsys.readouterr()
    theirs = files_under(tmp_path / "dacbench")
    assert len(theirs) == 12 and files_under(ours) == [*theirs, "results.jsonl"]
    for name in theirs:
        if not name.endswith("benchmark.json"):  # DACBench writes function addresses there
            assert (ours / name).read_bytes() == (tmp_path / "dacbench" / name).read_bytes(), name
    # Progress went to stderr, the summary to stdout.
    assert "[4/4] FunctionApproximationBenchmark optimal_1: 3 episodes" in captured.err
    assert "LubyBenchmark   optimal      2         6" in captured.out


def test_random_runs_repeat_and_equal_dacbench_s_seeded_in_process_runs(tmp_path):
    need_module("dacbench")
    ours = tmp_path / "ours"
    argv = ["baselines", "--benchmarks", "Luby", "--random", "--fixed_random", "3", *OPTIONS,
            "--runtime", "local"]
    assert main([*argv, "--outdir", str(ours)]) == 0
    assert main([*argv, "--outdir", str(tmp_path / "again")]) == 0
    expected = reference(sys.executable, tmp_path / "reference", "LubyBenchmark",
                         "dacbench:random:3", 3, [0, 1])
    for seed in (0, 1):
        run = Path("LubyBenchmark", f"random_fixed3_{seed}")
        mine = performance_frame(ours / run)
        assert mine.equals(performance_frame(expected / run))
        assert mine.equals(performance_frame(tmp_path / "again" / run))


@pytest.mark.parametrize(("argv", "problem"), [
    (["--benchmarks", "ToySGDBenchmark", "--optimal"],
     "dacbench:optimal (--optimal) is not available for ToySGDBenchmark: DACBench has optimal "
     "policies (OPTIMAL_POLICIES) only for LubyBenchmark, FunctionApproximationBenchmark, "
     "FastDownwardBenchmark"),
    (["--benchmarks", "Luby", "ToySGD", "--random", "--optimal"], "not available for ToySGD"),
    (["--benchmarks", "Luby", "--dyna_baseline"], "only for CMAESBenchmark, SGDBenchmark"),
    (["--benchmarks", "Luby", "--static"], "--static needs the actions to play"),
    (["--benchmarks", "Luby"], "choose at least one baseline"),
    (["--benchmarks", "Luby", "--random", "--num_episodes", "0"], "at least 1"),
    (["--benchmarks", "Lubby", "--random"], "'Lubby' is not in the catalog; known benchmarks:"),
])
def test_what_cannot_run_is_refused_before_anything_runs(tmp_path, capsys, argv, problem):
    outdir = tmp_path / "out"
    # Had anything run, OUTDIR would hold its results.jsonl and logs.
    code = main(["baselines", *argv, "--outdir", str(outdir), "--runtime", "bwrap"])
    err = capsys.readouterr().err
    assert code == 1 and problem in err and "Traceback" not in err
    assert not outdir.exists()


def test_without_benchmarks_every_catalog_benchmark_with_the_policy_runs():
    notes = []
    planned = plan(None, Selection(optimal=True, random=True), load_catalog(), "exp:0.01",
                   notes.append)
    by_name = dict(planned)
    assert by_name["Luby"] == ["dacbench:random", "dacbench:optimal"]
    assert by_name["ToySGD"] == ["dacbench:random"]
    assert any("skipping ToySGD" in note for note in notes)
    with pytest.raises(Exception, match="has no DACBench benchmark at exp:nonexistent"):
        plan(None, Selection(random=True), load_catalog(), "exp:nonexistent", notes.append)


def test_static_actions_are_read_as_dacbench_reads_them():
    selection = Selection(static=True, actions=(1.0, [0.5, 1.0]))
    assert selection.specs("Luby") == ["dacbench:static:1.0", "dacbench:static:[0.5, 1.0]"]
    assert Selection(static=True, actions=(2.0,)).specs("FastDownwardBenchmark") == [
        "dacbench:static:2"]


def test_help_says_what_it_writes_and_which_policies_exist(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit):
        main(["baselines", "--help"])
    text = capsys.readouterr().out
    for needed in ("OUTDIR/BENCHMARK/EXPERIMENT_SEED/", "PerformanceTrackingWrapper.jsonl",
                   "load_logs", "--optimal for LubyBenchmark", "the global RNGs and the action space",
                   "results.jsonl"):
        assert needed in text, needed
