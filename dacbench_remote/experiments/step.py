"""What every step kind implements (`StepKind`), what a running step is given (`StepContext`),
and `Params`, the typed reading of a step's parameter table that names the key in every error.

A kind checks its parameters twice: when the spec is read (a value that is one whole reference,
`"${tune.best_value}"`, is let through: its type is known only once it is resolved) and again,
resolved, just before the step runs.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BadConfig
from ..sweeps import spec as sweep_spec
from .references import whole_reference

if TYPE_CHECKING:
    from .spec import ExperimentSpec, StepSpec

# An output whose inside a spec may reference freely (a table a function returned, say).
ANY = None


class Params:
    """A step's parameter table, read key by key; errors read `FILE: steps.NAME.KEY: PROBLEM`."""

    def __init__(self, table: dict, filename: str, prefix: str, base: Path,
                 resolved: bool = False):
        self.table = table
        self.where = sweep_spec._Where(filename)
        self.prefix = prefix
        self.base = base
        self.resolved = resolved  # references were replaced: check every value's type

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def error(self, name: str, problem: str) -> BadConfig:
        return self.where.error(self.key(name), problem)

    def deferred(self, name: str) -> bool:
        """True when the value is one whole reference, to be checked once resolved."""
        return not self.resolved and whole_reference(self.table.get(name))

    def has(self, name: str) -> bool:
        return name in self.table

    def required(self, name: str) -> None:
        if name not in self.table:
            raise self.error(name, "is required")

    def string(self, name: str, default: str | None = None, *, required: bool = False,
               choices: tuple[str, ...] = ()) -> Any:
        if required:
            self.required(name)
        if name not in self.table or self.deferred(name):
            return self.table.get(name, default)
        value = self.table[name]
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.error(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int | None = None, *, minimum: int | None = None,
                required: bool = False) -> Any:
        if required:
            self.required(name)
        if name not in self.table or self.deferred(name):
            return self.table.get(name, default)
        value = sweep_spec._int(self.table[name], self.where, self.key(name))
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        return value

    def number(self, name: str, default: float | None = None, *, low: float | None = None,
               high: float | None = None) -> Any:
        if name not in self.table or self.deferred(name):
            return self.table.get(name, default)
        value = self.table[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {value!r}")
        if (low is not None and value <= low) or (high is not None and value >= high):
            raise self.error(name, f"must lie strictly between {low} and {high}, got {value}")
        return float(value)

    def boolean(self, name: str, default: bool = False) -> Any:
        if name not in self.table or self.deferred(name):
            return self.table.get(name, default)
        value = self.table[name]
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {value!r}")
        return value

    def seeds(self, name: str) -> Any:
        self.required(name)
        if self.deferred(name):
            return self.table[name]
        return sweep_spec._seeds(self.table[name], self.where, self.key(name))

    def benchmark(self, name: str = "benchmark") -> Any:
        self.required(name)
        if self.deferred(name):
            return self.table[name]
        return sweep_spec._benchmark(self.table[name], self.where, self.key(name))

    def json_table(self, name: str) -> Any:
        if name not in self.table or self.deferred(name):
            return self.table.get(name, {})
        value = self.table[name]
        sweep_spec._table(value, self.where, self.key(name))
        if self.resolved:  # references inside are checked once they are replaced
            sweep_spec._check_json(value, self.where, self.key(name))
        return dict(value)

    def agent(self, value: Any, key: str) -> Any:
        """An agent spec; one with references inside is checked once they are resolved."""
        if not self.resolved and isinstance(value, str) and "${" in value:
            return value
        return sweep_spec._agent(value, self.where, key)  # dacbench:... specs parsed too

    def instances(self, name: str = "instances") -> Any:
        """DACBench instance ids to cycle through, episode by episode ([]: its own order)."""
        if name not in self.table or self.deferred(name):
            return self.table.get(name, [])
        value = self.table[name]
        if not isinstance(value, list) or not all(
                isinstance(v, int | str) and not isinstance(v, bool) for v in value):
            raise self.error(name, f"must be an array of instance ids, got {value!r}")
        return list(value)

    def list_of_strings(self, name: str, *, required: bool = False) -> Any:
        if required:
            self.required(name)
        if name not in self.table or self.deferred(name):
            return self.table.get(name, [])
        value = self.table[name]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"must be an array of non-empty strings, got {value!r}")
        return list(value)


@dataclass
class StepContext:
    """What a running step is given: its spec, its resolved parameters, its directory, the
    outputs of the steps it needs, and the run's shared cancel event and counters."""

    step: StepSpec
    params: dict
    dir: Path
    experiment: ExperimentSpec
    run_id: str
    inputs: dict[str, dict]
    cancel_event: threading.Event
    say: Callable[[str], None] = lambda line: None
    on_job: Callable[[str], None] = lambda job_id: None
    executed: list[int] = field(default_factory=lambda: [0])  # container trials run now

    @property
    def label(self) -> str:
        """The step as job names and result rows name it: EXPERIMENT.STEP."""
        return f"{self.experiment.name}.{self.step.name}"

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise KeyboardInterrupt(f"step {self.step.name} was stopped")


class StepKind(ABC):
    """One kind of step (`kind = "tune"`): its parameters, its outputs, how it runs."""

    name: ClassVar[str]
    keys: ClassVar[frozenset[str]]  # its own parameter keys, beside the common ones
    runs_containers: ClassVar[bool] = True  # uses [runtime]/[executor]

    @abstractmethod
    def check(self, params: Params) -> dict:
        """The parameters, checked and normalised (references left in unless resolved)."""

    @abstractmethod
    def outputs(self, params: dict) -> dict[str, Any]:
        """The outputs a spec may reference: name -> ANY, or a table of the names inside."""

    def images(self, step: StepSpec, params: dict, base: Path) -> list[dict]:
        """The images the step runs, as (benchmark, experiment, sha256) records: part of its
        fingerprint, so that a changed image reruns it."""
        return []

    @abstractmethod
    def run(self, ctx: StepContext) -> dict:
        """Run the step to its outputs (JSON values); raise to fail it."""
