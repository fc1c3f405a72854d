"""DACBench's baselines inside the real images (bwrap), next to the env, against DACBench's own
run_baselines functions in-process in a venv holding exactly each image's pins: the light
benchmarks in the base image (DACBench 0.5.6), CMAES in its image, and Luby in the DACBench 0.3.0
image. Compared: returns, lengths, and the PerformanceTrackingWrapper logs as DACBench's
log2dataframe reads them (see tests/baseline_reference.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dacbench_remote import RemoteRunner
from dacbench_remote.cli import main
from dacbench_remote.errors import BadConfig, RemoteError
from tests.baseline_reference import assert_same_as_reference, reference
from tests.integration.test_versions import pins_python
from tests.test_baselines import LIGHT_BASELINES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
SEEDS = [0, 1]
EPISODES = 3


def compare(image: Path, python: str, tmp_path: Path, benchmark: str, specs: list[str],
            seeds: list[int], episodes: int) -> None:
    """Every spec, seed for seed, in the image and in-process under `python`."""
    with RemoteRunner(benchmark, runtime="bwrap", image=image,
                      results_path=tmp_path / "results.jsonl") as runner:
        for spec in specs:
            expected = reference(python, tmp_path / f"reference-{specs.index(spec)}", benchmark,
                                 spec, episodes, seeds)
            for seed in seeds:
                run = runner.run_baseline(spec, episodes, seed)
                run.write_logs(tmp_path / "ours")
                assert_same_as_reference(run, tmp_path / "ours", expected)


@pytest.mark.parametrize("benchmark", sorted(LIGHT_BASELINES))
def test_light_baselines_in_the_base_image_equal_dacbench_in_process(tmp_path, benchmark,
                                                                    base_image):
    compare(base_image, pins_python("dacbench-base"), tmp_path, benchmark,
            LIGHT_BASELINES[benchmark], SEEDS, EPISODES)


def test_cmaes_baselines_in_its_image_equal_dacbench_in_process(tmp_path, recipe_image):
    """CMAES draws from the global RNGs (modcma): the seeding makes both sides repeat. Its
    static baseline is left out: a static action is a dict of 12 keys, and DACBench names the
    run's directory after it, longer than a file name may be."""
    image = recipe_image("dacbench-cmaes")
    python = pins_python("dacbench-cmaes")
    compare(image, python, tmp_path, "CMAESBenchmark", ["dacbench:random"], SEEDS, 1)


def test_cmaes_csa_fails_in_the_image_as_it_fails_in_process(tmp_path, recipe_image):
    """DACBench 0.5.6's `csa` reads pycma's `es.sigma`, which the modcma ModularCMAES of its own
    CMAES env lacks: its dynamic baseline fails in-process, and next to the env the same error
    comes back (type, message and DACBench's traceback), not some other one."""
    outdir = tmp_path / "reference"
    script = Path(__file__).resolve().parents[1] / "inprocess_baselines.py"
    done = subprocess.run([pins_python("dacbench-cmaes"), str(script), str(outdir),
                           "CMAESBenchmark", "dynamic", "1", "0"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode != 0
    in_process = done.stderr.strip().splitlines()[-1]
    with RemoteRunner("CMAES", runtime="bwrap", image=recipe_image("dacbench-cmaes"),
                      results_path=None) as runner, pytest.raises(RemoteError) as raised:
        runner.run("dacbench:dynamic", 1, seed=0)
    assert f"{raised.value.remote_type}: {raised.value.remote_message}" == in_process
    assert in_process == "AttributeError: 'ModularCMAES' object has no attribute 'sigma'"
    assert "csa_cma.py" in raised.value.remote_traceback


def test_the_command_on_the_image_writes_what_dacbench_s_command_writes(tmp_path, base_image,
                                                                         capsys):
    """DACBench's own CLI, unchanged, in a venv of the image's pins is the reference."""
    arguments = ["--benchmarks", "LubyBenchmark", "FunctionApproximationBenchmark", "--optimal",
                 "--seeds", "0", "1", "--num_episodes", "3"]
    done = subprocess.run([pins_python("dacbench-base"), "-m", "dacbench.run_baselines",
                           *arguments, "--outdir", str(tmp_path / "dacbench")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr[-3000:]
    ours = tmp_path / "ours"
    assert main(["baselines", *arguments, "--outdir", str(ours), "--runtime", "bwrap",
                 "--image", str(base_image)]) == 0
    assert "bwrap runtime" in capsys.readouterr().err
    theirs = sorted(p.relative_to(tmp_path / "dacbench") for p in
                    (tmp_path / "dacbench").rglob("*") if p.is_file())
    assert len(theirs) == 12
    for name in theirs:
        if name.name != "benchmark.json":  # DACBench writes function addresses there
            assert (ours / name).read_bytes() == (tmp_path / "dacbench" / name).read_bytes()


def test_baselines_in_the_dacbench_0_3_0_image(tmp_path, recipe_image):
    """DACBench 0.3.0 has the same run_baselines, agents and policies (numpy 1.26, gymnasium
    0.29): they run there too, and its own policy table refuses what ours refuses."""
    image = recipe_image("dacbench-base-0.3.0")
    compare(image, pins_python("dacbench-base-0.3.0"), tmp_path, "LubyBenchmark",
            ["dacbench:random", "dacbench:optimal"], SEEDS, EPISODES)
    # A benchmark the host cannot place: the server answers from DACBench 0.3.0's own dicts.
    with RemoteRunner("dacbench.benchmarks:ToySGDBenchmark", runtime="bwrap", image=image,
                      results_path=None) as runner, pytest.raises(BadConfig) as refused:
        runner.run("dacbench:optimal", 1)
    assert "DACBench has optimal policies (OPTIMAL_POLICIES) only for LubyBenchmark, " \
           "FunctionApproximationBenchmark, FastDownwardBenchmark" in str(refused.value)
