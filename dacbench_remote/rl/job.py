"""The job file: what the host asks the trainer in the agent image to do, and the files of a job
directory (bound into the agent's container) through which the two sides talk.

Standard library only: the host writes it, the agent image reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import BadConfig

# Where the job directory appears inside the agent's container (under /tmp, where every
# container runtime can create a bind destination in a read-only image).
JOB_DIR_INSIDE = "/tmp/dacbench-remote-job"
JOB_NAME = "job.json"
RESULT_NAME = "result.json"  # written once, atomically, when the job ends (ok or error)
PROGRESS_NAME = "progress.log"  # one line per progress message, read by the host as it grows
MODEL_NAME = "model.zip"  # what train saves (atomically) and evaluate loads
ACTIONS = ("train", "evaluate")


@dataclass
class AgentJob:
    """One run of the trainer: train a new model, or evaluate a saved one.

    `target`/`config`/`kwargs`/`description` say which env to make in the server, as
    RemoteRunner does (a name, or a benchmark object's description). Env i of the `num_envs`
    is reset with `seed + i`; evaluation episode i with `eval_seed + i`.
    """

    action: str
    algorithm: str
    target: str | None
    config: Any = None
    kwargs: dict = field(default_factory=dict)
    description: dict | None = None
    num_envs: int = 1
    timesteps: int = 0
    seed: int = 0
    hyperparameters: dict = field(default_factory=dict)
    eval_episodes: int = 0
    eval_seed: int = 0
    deterministic: bool = True
    torch_threads: int = 1
    call_timeout: float = 300.0

    def check(self) -> AgentJob:
        """This job, if its values can run; BadConfig naming the first that cannot."""
        if self.action not in ACTIONS:
            raise BadConfig(f"job action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        for name, minimum in (("num_envs", 1), ("torch_threads", 1), ("eval_episodes", 0),
                              ("timesteps", 1 if self.action == "train" else 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise BadConfig(f"{name} must be an integer >= {minimum}, not {value!r}")
        if self.action == "evaluate" and self.eval_episodes < 1:
            raise BadConfig("evaluating needs eval_episodes >= 1")
        if not isinstance(self.hyperparameters, dict):
            raise BadConfig(f"hyperparameters must be a dict of the algorithm's keyword "
                            f"arguments, not {self.hyperparameters!r}")
        return self

    def write(self, directory: Path) -> Path:
        """Write the job into `directory` as JOB_NAME; return its path."""
        path = Path(directory) / JOB_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> AgentJob:
        """The job written at `path`; BadConfig if it is not one."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise BadConfig(f"cannot read the job file {path}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known or "action" not in data:
            what = sorted(set(data) - known) if isinstance(data, dict) else data
            raise BadConfig(f"{path} is not a job file of this dacbench-remote version "
                            f"(unexpected: {what!r})")
        try:
            job = cls(**data)
        except TypeError as exc:  # a required key is missing
            raise BadConfig(f"{path} is not a complete job file: {exc}") from None
        return job.check()
