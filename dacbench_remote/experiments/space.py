"""A tune step's search space: typed parameters (int, float, log-float, categorical), the
grid they span when it is finite, and the placeholders `{name}` that put a candidate's values
into the agent spec, the benchmark config and the env's keyword arguments."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .step import Params

TYPES = ("int", "float", "categorical")
_PARAM_KEYS = {"type", "low", "high", "step", "log", "choices"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def grid(self) -> list | None:
        """Every value, when there are finitely many; None otherwise."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [self.low + i * self.step for i in range(count)]

    def to_dict(self) -> dict:
        return {k: v for k, v in {"type": self.type, "low": self.low, "high": self.high,
                                  "step": self.step, "log": self.log or None,
                                  "choices": list(self.choices) or None}.items() if v is not None}


def parse_space(params: Params, name: str = "space") -> list[Parameter]:
    """The `[steps.NAME.space]` table as Parameters; BadConfig naming the key of any problem."""
    params.required(name)
    table = params.table[name]
    if not isinstance(table, dict) or not table:
        raise params.error(name, "must be a table of parameters, e.g. action = { type = "
                                 "\"int\", low = 0, high = 5 }")
    space = []
    for pname, entry in table.items():
        key = f"{name}.{pname}"
        if not re.fullmatch(r"[A-Za-z_]\w*", pname):
            raise params.error(key, "parameter names are letters, digits and '_' (they are "
                                    "used as {name} placeholders)")
        if not isinstance(entry, dict):
            raise params.error(key, f"must be a table with type = one of {', '.join(TYPES)}")
        unknown = sorted(set(entry) - _PARAM_KEYS)
        if unknown:
            raise params.error(f"{key}.{unknown[0]}", "unknown key; expected one of "
                                                      f"{', '.join(sorted(_PARAM_KEYS))}")
        kind = entry.get("type")
        if kind not in TYPES:
            raise params.error(f"{key}.type", f"{kind!r} is not a parameter type; use one of "
                                              f"{', '.join(TYPES)}")
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices or len(set(map(json.dumps, choices))) \
                    != len(choices):
                raise params.error(f"{key}.choices", "must be a non-empty array of distinct values")
            for extra in ("low", "high", "step", "log"):
                if extra in entry:
                    raise params.error(f"{key}.{extra}", "is for int and float parameters")
            space.append(Parameter(pname, kind, choices=tuple(choices)))
            continue
        if "choices" in entry:
            raise params.error(f"{key}.choices", "is for categorical parameters")
        number = int if kind == "int" else (int, float)
        values = {}
        for bound in ("low", "high"):
            value = entry.get(bound)
            if isinstance(value, bool) or not isinstance(value, number) or \
                    not math.isfinite(value):
                wanted = "an integer" if kind == "int" else "a number"
                raise params.error(f"{key}.{bound}", f"must be {wanted}, got {value!r}")
            values[bound] = value
        if values["low"] > values["high"]:
            raise params.error(f"{key}.high", f"must be at least low ({values['low']}), "
                                              f"got {values['high']}")
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise params.error(f"{key}.log", f"must be true or false, got {log!r}")
        if log and values["low"] <= 0:
            raise params.error(f"{key}.low", "must be positive on a log scale")
        step = entry.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
                raise params.error(f"{key}.step", f"must be a positive {kind}, got {step!r}")
            if log:
                raise params.error(f"{key}.step", "cannot be combined with log = true")
        space.append(Parameter(pname, kind, values["low"], values["high"], step, log))
    return space


def grid_size(space: list[Parameter]) -> int | None:
    sizes = [p.grid() for p in space]
    if any(s is None for s in sizes):
        return None
    return math.prod(len(s) for s in sizes)


def full_grid(space: list[Parameter]) -> list[dict]:
    """Every candidate of a finite space (for grid search, and for tests that enumerate)."""
    names = [p.name for p in space]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(p.grid() for p in space))]


def placeholders(value: Any) -> set[str]:
    """The `{name}` placeholders in a value (strings inside arrays and tables too)."""
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    return set()


def fill(value: Any, candidate: dict) -> Any:
    """`value` with the candidate's values put in: a string that is one placeholder becomes the
    value itself (its type kept), one inside text becomes its JSON text. Braces that name no
    parameter (JSON actions, say) stay as they are."""
    if isinstance(value, list):
        return [fill(v, candidate) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, candidate) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = _PLACEHOLDER.fullmatch(value)
    if whole and whole.group(1) in candidate:
        return candidate[whole.group(1)]
    return _PLACEHOLDER.sub(
        lambda m: json.dumps(candidate[m.group(1)]) if m.group(1) in candidate else m.group(0),
        value)
