"""The `dacbench-remote` command, run as a real subprocess: output, exit codes, error messages."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dacbench_remote.cli import build_parser
from dacbench_remote.config import load_config
from dacbench_remote.images.catalog import Catalog
from tests.needs import need_module

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dacbench_remote", *args], capture_output=True,
                          text=True, cwd=kwargs.pop("cwd", REPO), timeout=timeout, **kwargs)


def test_installed_command_lists_every_command_of_the_parser():
    done = cli("--help", env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0
    listed = re.findall(r"^    (\w+)\s{2,}\S", done.stdout, re.MULTILINE)
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert listed == list(commands.choices)


def test_run_prints_a_table_and_writes_results(tmp_path):
    done = cli("run", "gymnasium:CartPole-v1", "--runtime", "local",
               "--episodes", "2", "--seed", "3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "episode" in done.stdout and "mean return" in done.stdout
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [3, 4]


def test_unknown_benchmark_is_one_clear_line_without_traceback():
    need_module("dacbench")
    done = cli("run", "NoSuchBench", "--runtime", "local", "--episodes", "1")
    assert done.returncode == 1
    assert "unknown DACBench benchmark 'NoSuchBench'" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_config_argument_is_named():
    done = cli("run", "Luby", "--runtime", "local", "--config", "{broken")
    assert done.returncode == 1
    assert "--config is neither a JSON object nor a JSON file" in done.stderr


def test_list_shows_every_version_of_the_catalog_and_config_its_settings(tmp_path):
    (tmp_path / "config.toml").write_text('default_runtime = "bwrap"\n')
    env = {**os.environ, "DACBENCH_REMOTE_CONFIG": str(tmp_path / "config.toml"),
           "DACBENCH_REMOTE_CACHE": str(tmp_path / "cache")}
    env.pop("DACBENCH_REMOTE_CATALOG", None)
    env.pop("DACBENCH_REMOTE_RUNTIME", None)
    listing = cli("list", env=env)
    assert listing.returncode == 0, listing.stderr
    catalog = Catalog.load(load_config(environ=env).catalog_dirs)
    expected = [[benchmark, version.experiment] for benchmark in catalog.benchmarks()
                for version in catalog.versions(benchmark)]
    benchmarks_table, agents_table = listing.stdout.split("\n\n", 1)
    rows = [line.split()[:2] for line in benchmarks_table.splitlines()[2:]]
    assert rows == expected and len(rows) >= 4
    # Then the agent images, one row per version of each agent family.
    agent_rows = [line.split()[:2] for line in agents_table.splitlines()[3:]]
    assert agent_rows == [[",".join(family.agents), version.experiment]
                          for family in catalog.families.values() if family.kind == "agent"
                          for version in family.versions] != []
    config = cli("config", env=env)
    assert config.returncode == 0, config.stderr
    assert config.stdout == load_config(environ=env).describe() + "\n"
    assert f"{tmp_path / 'cache'}    [env $DACBENCH_REMOTE_CACHE]" in config.stdout
    assert f"default_runtime = bwrap    [file {tmp_path / 'config.toml'}]" in config.stdout


def test_inspect_shows_benchmarks_labels_and_digest(base_image):
    done = cli("inspect", str(base_image))
    assert done.returncode == 0, done.stderr
    assert "FunctionApproximation,Luby,ToySGD" in done.stdout
    assert "org.dacbench-remote.dacbench-version = 0.5.6" in done.stdout
    assert "FS" in done.stdout and "sha256" in done.stdout


def test_inspect_of_a_file_that_is_not_an_image(tmp_path):
    bogus = tmp_path / "bogus.sif"
    bogus.write_bytes(b"not a sif at all" * 100)
    done = cli("inspect", str(bogus))
    assert done.returncode == 1
    assert "bogus.sif" in done.stderr and "Traceback" not in done.stderr


def test_ps_lists_a_running_server_and_cleanup_leaves_it_alone():
    host = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom dacbench_remote import RemoteRunner\n"
         "r = RemoteRunner('gymnasium:CartPole-v1', runtime='local'); r.start()\n"
         "print(r.server.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        pid = host.stdout.readline().strip()
        listing = cli("ps")
        assert listing.returncode == 0
        assert any(line.split()[:2] == [pid, "local"] for line in listing.stdout.splitlines())
        cleanup = cli("cleanup")
        assert cleanup.returncode == 0
        assert f"stopped orphaned server {pid}" not in cleanup.stdout  # its host is alive
        assert Path(f"/proc/{pid}").exists()
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "server outlived its killed host"


def test_sweep_run_status_and_report(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text("""
name = "cli-demo"
episodes = 1
[runtime]
kind = "local"
[grid]
agents = ["random", "static"]
seeds = [0, 1]
[[grid.benchmarks]]
benchmark = "gymnasium:CartPole-v1"
[executor.local]
workers = 2
""")
    done = cli("sweep", "run", str(spec))
    assert done.returncode == 0, done.stderr
    assert "4 done, 0 failed" in done.stdout
    status = cli("sweep", "status", str(tmp_path / "cli-demo"))
    assert "4/4 trials finished" in status.stdout
    assert cli("status", str(tmp_path / "cli-demo")).stdout == status.stdout  # the alias
    report = cli("sweep", "report", str(tmp_path / "cli-demo"), "--no-plot")
    assert "random" in report.stdout and "static" in report.stdout
    assert cli("report", str(tmp_path / "cli-demo"), "--no-plot").stdout == report.stdout
    again = cli("sweep", "run", str(spec))
    assert "0 trial(s) run, 4 already complete" in again.stdout


def test_bad_sweep_spec_names_the_key(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text('name = "x"\n[executor]\nworkers = 2\n')
    done = cli("sweep", "run", str(spec))
    assert done.returncode == 1
    assert "executor.workers" in done.stderr and "unknown key" in done.stderr
