"""A trial (one benchmark variant x agent x seed, run for N episodes) and its recorded outcome.

A trial's id is a hash of the canonical JSON of what defines its results, so the same spec gives
the same ids on every machine and executor, and a resumed sweep recognises finished work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..runtimes.options import RuntimeOptions

# Bump when the meaning of the id parameters changes, so old results are never mistaken for new.
ID_VERSION = 1
ID_LENGTH = 12

# Final states written to done.json; "cancelled" trials write nothing and are run again.
DONE, FAILED, TIMED_OUT, CANCELLED = "done", "failed", "timed_out", "cancelled"
FINAL_STATES = (DONE, FAILED, TIMED_OUT)


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, no NaN, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


@dataclass(frozen=True)
class Trial:
    """One unit of work: `episodes` episodes of `agent` on one benchmark variant with `seed`."""

    benchmark: str
    agent: str
    seed: int
    episodes: int
    experiment: str | None = None
    config: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)
    time_limit: float = 3600.0
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    retries: int = 0  # attempts more when the server (or node) died; not for the env's errors
    test_set: bool = False  # DACBench's use_test_set() before the first episode
    instances: tuple = ()  # episode i resets with the instance id instances[i % len]

    def id_params(self) -> dict:
        """What defines this trial's results, and so its id (the instance choices only when
        made, so that ids of trials without them stay as they were)."""
        params = {
            "v": ID_VERSION,
            "benchmark": self.benchmark,
            "experiment": self.experiment,
            "config": self.config,
            "kwargs": self.kwargs,
            "agent": self.agent,
            "seed": self.seed,
            "episodes": self.episodes,
        }
        if self.test_set:
            params["test_set"] = True
        if self.instances:
            params["instances"] = list(self.instances)
        return params

    @cached_property  # computed once: status and report of a large sweep ask often
    def id(self) -> str:
        digest = hashlib.sha256(canonical_json(self.id_params()).encode()).hexdigest()
        return digest[:ID_LENGTH]

    def variant(self) -> str:
        """The benchmark as reports group it: name, experiment id and non-default settings."""
        text = self.benchmark
        if self.experiment:
            text += f"@{self.experiment}"
        settings = {**self.config, **{f"kwargs.{k}": v for k, v in self.kwargs.items()}}
        if settings:
            text += " " + canonical_json(settings)
        return text

    def label(self) -> str:
        return f"{self.variant()} agent={self.agent} seed={self.seed}"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["runtime"]["binds"] = list(self.runtime.binds)
        data["instances"] = list(self.instances)
        data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: dict, keep_id: bool = False) -> Trial:
        """The trial `to_dict` wrote; `keep_id`: take its recorded id instead of hashing again
        (for trials.json, which the sweep wrote itself: 10,000 hashes cost 0.1 s)."""
        data = dict(data)
        recorded = data.pop("id", None)
        runtime = dict(data.pop("runtime", {}))
        runtime["binds"] = tuple(runtime.get("binds", ()))
        data["instances"] = tuple(data.get("instances", ()))
        trial = cls(runtime=RuntimeOptions(**runtime), **data)
        if keep_id and isinstance(recorded, str):
            trial.__dict__["id"] = recorded  # where cached_property keeps it
        return trial


@dataclass
class TrialOutcome:
    """What happened to one trial in one sweep run (the content of its done.json)."""

    trial_id: str
    status: str
    run_id: str
    episodes: int = 0
    mean_return: float | None = None
    error: str | None = None
    started: float = 0.0
    finished: float = 0.0
    host: str = ""
    exit_code: int | None = None
    retries: list[dict] = field(default_factory=list)  # the attempts before, and why they ended

    @property
    def wall_time(self) -> float:
        return max(0.0, self.finished - self.started)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "wall_time": self.wall_time}

    @classmethod
    def from_dict(cls, data: dict) -> TrialOutcome:
        return cls(**{k: v for k, v in data.items() if k in _OUTCOME_FIELDS})


_OUTCOME_FIELDS = frozenset(f.name for f in dataclasses.fields(TrialOutcome))
