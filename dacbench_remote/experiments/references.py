"""References between steps: `${tune.best.action}` in a step's parameters names an output of an
earlier step, resolved just before the step runs.

A value that is one whole reference becomes the referenced value with its type (a number, a
table); a reference inside longer text is replaced by its text (strings as they are, other
values as JSON). `$${` writes a literal `${`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import BadConfig

_PATTERN = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Reference:
    """`${step.a.b}`: the output path (a, b) of step `step`."""

    step: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return "${" + ".".join((self.step, *self.path)) + "}"


def parse_reference(body: str, key: str) -> Reference:
    """The reference whose text between `${` and `}` is `body`; BadConfig naming `key` if bad."""
    parts = body.split(".")
    if len(parts) < 2 or not all(_PART.match(p) for p in parts):
        raise BadConfig(f"{key}: ${{{body}}} is not a reference; write ${{STEP.OUTPUT}} or "
                        "${STEP.OUTPUT.KEY} (letters, digits, '_' and '-'), or $${ for a "
                        "literal ${")
    return Reference(parts[0], tuple(parts[1:]))


def references_in(value: Any, key: str) -> Iterator[tuple[str, Reference]]:
    """Every reference in a parameter value (strings inside arrays and tables too), with the
    key it sits at (`steps.evaluate.policies[1]`)."""
    if isinstance(value, str):
        for match in _PATTERN.finditer(value):
            if match.group(0) != "$${":
                yield key, parse_reference(match.group(1), key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references_in(item, f"{key}[{index}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from references_in(item, f"{key}.{name}")


def whole_reference(value: Any) -> bool:
    """True for a string that is exactly one reference: it takes the referenced value's type."""
    if not isinstance(value, str):
        return False
    match = _PATTERN.fullmatch(value)
    return match is not None and match.group(0) != "$${"


def resolve(value: Any, outputs: dict[str, dict], key: str) -> Any:
    """`value` with every reference replaced by the output it names (see the module doc)."""
    if isinstance(value, list):
        return [resolve(item, outputs, f"{key}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {name: resolve(item, outputs, f"{key}.{name}") for name, item in value.items()}
    if not isinstance(value, str):
        return value
    if whole_reference(value):
        return lookup(parse_reference(value[2:-1], key), outputs, key)

    def replace(match: re.Match) -> str:
        if match.group(0) == "$${":
            return "${"
        found = lookup(parse_reference(match.group(1), key), outputs, key)
        return found if isinstance(found, str) else json.dumps(found, sort_keys=True)

    return _PATTERN.sub(replace, value)


def lookup(reference: Reference, outputs: dict[str, dict], key: str) -> Any:
    """The output a reference names; BadConfig naming the key when it is not there."""
    if reference.step not in outputs:
        raise BadConfig(f"{key}: {reference} names step {reference.step!r}, whose outputs are "
                        "not available (it has not run)")
    value: Any = outputs[reference.step]
    for depth, part in enumerate(reference.path):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            where = ".".join((reference.step, *reference.path[:depth])) or reference.step
            have = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise BadConfig(f"{key}: {reference}: {where} has no {part!r} (it has: {have})")
    return value
