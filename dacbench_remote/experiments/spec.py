"""The experiment spec (TOML): steps that form a DAG, each with a kind, the steps it needs and
its own runtime, executor and time limit (inherited from the top).

Everything that can be checked before a container starts is checked here, and every problem is
one BadConfig naming the file, the key and what is wrong: unknown keys and kinds, wrong types,
needs that name no step, circles, references to steps that are not needed or to outputs that a
step does not have.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import parse_toml
from ..errors import BadConfig
from ..runtimes.options import RuntimeOptions
from ..sweeps import spec as sweep_spec
from ..sweeps.spec import DEFAULT_TIME_LIMIT, ExecutorOptions
from .dag import find_cycle, topological_order, upstream
from .kinds import STEP_KINDS
from .references import Reference, references_in
from .step import ANY, Params

_TOP_KEYS = {"name", "dir", "description", "time_limit", "retries", "runtime", "executor",
             "steps"}
COMMON_STEP_KEYS = frozenset({"kind", "needs", "runtime", "executor", "time_limit", "retries"})


@dataclass
class StepSpec:
    """One checked step: its kind, needs, parameters (references still in), where it runs."""

    name: str
    kind: str
    needs: tuple[str, ...]
    params: dict
    raw: dict  # the step's table as written, for its fingerprint
    runtime: RuntimeOptions
    executor: ExecutorOptions
    time_limit: float
    retries: int

    @property
    def key(self) -> str:
        return f"steps.{self.name}"


@dataclass
class ExperimentSpec:
    """A checked experiment: name, directory, and its steps in an order that respects needs."""

    name: str
    path: Path
    dir: Path
    steps: dict[str, StepSpec]
    text: str
    description: str = ""

    @property
    def needs(self) -> dict[str, tuple[str, ...]]:
        return {name: step.needs for name, step in self.steps.items()}

    def params_of(self, step: StepSpec) -> Params:
        """The step's parameter table for a check (see StepKind.check)."""
        return Params(step.params, self.path.name, step.key, self.path.resolve().parent)


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and check an experiment spec; BadConfig names the key and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadConfig(f"experiment spec {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadConfig(f"experiment spec {path} cannot be read: {exc}") from exc
    return parse_experiment(text, path)


def parse_experiment(text: str, path: str | Path = "experiment.toml") -> ExperimentSpec:
    """Check a spec given as TOML text; relative paths in it are taken from `path`'s directory."""
    path = Path(path)
    where = sweep_spec._Where(path.name)
    data = parse_toml(text, path.name)
    base = path.resolve().parent
    sweep_spec._check_keys(data, _TOP_KEYS, where, "")
    name = sweep_spec._string(data, "name", where, required=True)
    if not sweep_spec._NAME.match(name):
        raise where.error("name", f"{name!r} must be letters, digits, '.', '_' or '-' (it names "
                                  "directories and Slurm jobs)")
    description = sweep_spec._string(data, "description", where) or ""
    directory = sweep_spec._resolve(base, sweep_spec._string(data, "dir", where) or name)
    top = {
        "time_limit": sweep_spec._duration(data.get("time_limit", DEFAULT_TIME_LIMIT), where,
                                           "time_limit"),
        "retries": sweep_spec._count(data.get("retries", 0), where, "retries"),
        "runtime": data.get("runtime", {}),
        "executor": data.get("executor", {}),
    }
    sweep_spec._table(top["runtime"], where, "runtime")
    sweep_spec._table(top["executor"], where, "executor")
    sweep_spec._runtime(top["runtime"], where, base)  # the top tables alone must be right too
    sweep_spec._executor(top["executor"], where, base)

    tables = data.get("steps")
    if not isinstance(tables, dict) or not tables:
        raise where.error("steps", "the spec defines no steps: add [steps.NAME] tables with "
                                   f"kind = one of {', '.join(STEP_KINDS)}")
    steps = {step_name: _step(step_name, table, where, base, top)
             for step_name, table in tables.items()}
    _check_needs(steps, where)
    order = topological_order({n: s.needs for n, s in steps.items()})
    steps = {n: steps[n] for n in order}
    spec = ExperimentSpec(name, path, directory, steps, text, description)
    for step in steps.values():
        step.params = STEP_KINDS[step.kind].check(spec.params_of(step))
    _check_references(spec, where)
    return spec


def _step(name: str, table: Any, where, base: Path, top: dict) -> StepSpec:
    key = f"steps.{name}"
    if not sweep_spec._NAME.match(name) or "." in name:
        raise where.error(key, f"{name!r} must be letters, digits, '_' or '-' (references name "
                               "steps as ${STEP.OUTPUT})")
    sweep_spec._table(table, where, key)
    if "kind" not in table:
        raise where.error(f"{key}.kind", f"is required: one of {', '.join(STEP_KINDS)}")
    kind = table["kind"]
    if kind not in STEP_KINDS:
        raise where.error(f"{key}.kind", f"{kind!r} is not a step kind; use one of "
                                         f"{', '.join(STEP_KINDS)}")
    step_kind = STEP_KINDS[kind]
    sweep_spec._check_keys(table, set(COMMON_STEP_KEYS | step_kind.keys), where, key)
    needs = table.get("needs", [])
    if not isinstance(needs, list) or not all(isinstance(n, str) and n for n in needs):
        raise where.error(f"{key}.needs", f"must be an array of step names, got {needs!r}")
    if len(set(needs)) != len(needs):
        raise where.error(f"{key}.needs", f"names a step twice: {needs}")
    runtime_table = _merged(top["runtime"], table.get("runtime", {}), where, f"{key}.runtime")
    executor_table = _merged(top["executor"], table.get("executor", {}), where,
                             f"{key}.executor")
    inner = sweep_spec._Where(where.filename)
    try:
        runtime = sweep_spec._runtime(runtime_table, inner, base)
        executor = sweep_spec._executor(executor_table, inner, base)
    except BadConfig as exc:  # name the step whose merged table is wrong
        raise BadConfig(str(exc).replace(f"{where.filename}: ", f"{where.filename}: {key}.", 1)
                        ) from exc
    params = {k: copy.deepcopy(v) for k, v in table.items() if k not in COMMON_STEP_KEYS}
    return StepSpec(
        name=name, kind=kind, needs=tuple(needs), params=params, raw=copy.deepcopy(table),
        runtime=runtime, executor=executor,
        time_limit=sweep_spec._duration(table.get("time_limit", top["time_limit"]), where,
                                        f"{key}.time_limit"),
        retries=sweep_spec._count(table.get("retries", top["retries"]), where, f"{key}.retries"),
    )


def _merged(outer: dict, inner: Any, where, key: str) -> dict:
    """A step's [runtime]/[executor] table over the top one (sub-tables merged key by key)."""
    sweep_spec._table(inner, where, key)
    merged = copy.deepcopy(outer)
    for name, value in inner.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return merged


def _check_needs(steps: dict[str, StepSpec], where) -> None:
    for step in steps.values():
        for index, needed in enumerate(step.needs):
            if needed == step.name:
                raise where.error(f"{step.key}.needs[{index}]", "a step cannot need itself")
            if needed not in steps:
                raise where.error(f"{step.key}.needs[{index}]",
                                  f"{needed!r} is not a step of this experiment (steps: "
                                  f"{', '.join(steps)})")
    cycle = find_cycle({n: s.needs for n, s in steps.items()})
    if cycle:
        raise where.error(f"steps.{cycle[0]}.needs",
                          f"the steps need each other in a circle: {' -> '.join(cycle)}; "
                          "no order can run them")


def _check_references(spec: ExperimentSpec, where) -> None:
    for step in spec.steps.values():
        before = upstream(spec.needs, step.name)
        try:
            found = list(references_in(step.params, step.key))
        except BadConfig as exc:  # a malformed ${...}: name the file too
            raise BadConfig(f"{where.filename}: {exc}") from exc
        for key, reference in found:
            if reference.step not in spec.steps:
                raise where.error(key, f"{reference} names step {reference.step!r}, which this "
                                       f"experiment does not have (steps: {', '.join(spec.steps)})")
            if reference.step not in before:
                raise where.error(key, f"{reference} names step {reference.step!r}, which "
                                       f"{step.name!r} does not need; add it to needs")
            target = spec.steps[reference.step]
            declared = STEP_KINDS[target.kind].outputs(target.params)
            _check_output_path(reference, declared, where, key)


def _check_output_path(reference: Reference, declared: dict, where, key: str) -> None:
    tree: Any = declared
    for depth, part in enumerate(reference.path):
        if tree is ANY:
            return
        if not isinstance(tree, dict) or part not in tree:
            at = ".".join((reference.step, *reference.path[:depth]))
            have = ", ".join(sorted(tree)) if isinstance(tree, dict) else "no parts"
            raise where.error(key, f"{reference}: {at} has no output {part!r} (it has: {have})")
        tree = tree[part]
