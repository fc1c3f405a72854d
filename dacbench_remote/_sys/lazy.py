"""Public names that a package imports on first use (PEP 562), written once for every package
that has them: the package root and `sweeps`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, names: dict[str, str],
               namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """The `__getattr__` and `__dir__` of the package named `package`, whose public `names`
    map to the modules (relative to it) that define them; `namespace` is its `globals()`,
    where each name is kept once imported."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
