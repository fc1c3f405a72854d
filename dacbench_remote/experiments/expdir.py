"""The experiment directory (`ExperimentDir`): where a run keeps its state on disk, one
sub-directory per step; files are replaced atomically, so a killed driver never leaves one
half-written.

    EXP_DIR/
      experiment.toml     copy of the spec of the latest run
      runs.jsonl          one line when each run starts and ends
      driver.json         the running driver (host, pid) while a run is in progress
      steps/NAME/
        state.json        waiting | running | done | cached | failed | blocked | interrupted,
                          with the fingerprint, run id, times and error
        outputs.json      the step's outputs and fingerprint, written last: the step is complete
        ...               the kind's own files: trials/ (as a sweep directory), results.csv,
                          study.journal and history.jsonl (tune), report.md/.html/.png (report)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .._sys.files import atomic_write_json
from ..errors import BadConfig
from ..sweeps.sweepdir import read_json


class ExperimentDir:
    """Paths and state files inside one experiment directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()

    def __str__(self) -> str:
        return str(self.path)

    spec = property(lambda self: self.path / "experiment.toml")
    runs = property(lambda self: self.path / "runs.jsonl")
    driver = property(lambda self: self.path / "driver.json")
    lock = property(lambda self: self.path / ".lock")

    def step_dir(self, name: str) -> Path:
        return self.path / "steps" / name

    def state(self, name: str) -> dict:
        data = read_json(self.step_dir(name) / "state.json")
        return data if isinstance(data, dict) else {"state": "waiting"}

    def set_state(self, name: str, **fields) -> None:
        atomic_write_json(self.step_dir(name) / "state.json", {**self.state(name), **fields},
                          durable=False)

    def outputs(self, name: str) -> dict | None:
        """The complete step's record {fingerprint, outputs, ...}, or None."""
        data = read_json(self.step_dir(name) / "outputs.json")
        return data if isinstance(data, dict) and "outputs" in data else None

    def write_outputs(self, name: str, record: dict) -> None:
        atomic_write_json(self.step_dir(name) / "outputs.json", record)

    def reset_step(self, name: str) -> None:
        """Remove everything of an earlier attempt (another fingerprint, or forced)."""
        shutil.rmtree(self.step_dir(name), ignore_errors=True)
        self.step_dir(name).mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        if not self.spec.is_file():
            raise BadConfig(f"{self.path} is not an experiment directory (no experiment.toml); "
                            "start one with `dacbench-remote experiment run SPEC`")
