"""DACBench values the strict codec does not carry, lowered to tagged plain trees and restored.

DACBench configs and env attributes hold `objdict`s, instances of DACBench's own classes
(`LubyInstance`, the toy functions of FunctionApproximation, ...), a ConfigSpace
`ConfigurationSpace` and numpy type objects (`np.float32`). `lower` turns those into dicts
marked with `MARK` (an object as its class path and attributes), which the codec then carries
exactly; `restore` rebuilds them. Only classes defined in DACBench's own modules are rebuilt by
name, without running their __init__; where DACBench is not installed (a host without it),
such an object comes back as a `RemoteRecord` with the same attributes.
"""

from __future__ import annotations

import importlib
import json
import types
from typing import Any

import numpy as np

MARK = "$dacbench-remote"
# Modules whose dataclasses may be rebuilt by name on the other side.
TRUSTED_PREFIX = "dacbench."


class RemoteRecord(types.SimpleNamespace):
    """A DACBench dataclass instance from the other side, where its class cannot be imported."""

    def __init__(self, class_path: str, fields: dict[str, Any]):
        super().__init__(**fields)
        object.__setattr__(self, "_class_path", class_path)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "_class_path")
        return f"{self._class_path.rpartition(':')[2]}({fields})"


def lower(value: Any) -> Any:
    """`value` with DACBench-specific objects replaced by marked plain dicts (recursively)."""
    kind = type(value)
    if kind is dict:
        return {key: lower(item) for key, item in value.items()}
    if kind is list:
        return [lower(item) for item in value]
    if kind is tuple:
        return tuple(lower(item) for item in value)
    if kind.__name__ == "objdict" and isinstance(value, dict):
        return {MARK: "objdict", "items": {key: lower(item) for key, item in value.items()}}
    if isinstance(value, type) and issubclass(value, np.generic):
        return {MARK: "numpy_type", "name": np.dtype(value).name}
    if kind.__name__ == "ConfigurationSpace" and kind.__module__.startswith("ConfigSpace"):
        return {MARK: "configspace", "value": _configspace_to_dict(value)}
    if _is_dacbench_object(value):
        return _lower_object(value)
    if isinstance(value, RemoteRecord):
        fields = {k: lower(v) for k, v in vars(value).items() if k != "_class_path"}
        return {MARK: "object", "class": value._class_path, "fields": fields}
    return value


def restore(value: Any) -> Any:
    """Undo `lower`: rebuild objdicts, DACBench dataclasses, config spaces and numpy types."""
    kind = type(value)
    if kind is dict:
        if MARK not in value:
            return {key: restore(item) for key, item in value.items()}
        restorer = _RESTORERS.get(value[MARK])
        if restorer is None:
            raise ValueError(f"unknown DACBench value tag {value[MARK]!r}; update dacbench-remote")
        return restorer(value)
    if kind is list:
        return [restore(item) for item in value]
    if kind is tuple:
        return tuple(restore(item) for item in value)
    return value


def _is_dacbench_object(value: Any) -> bool:
    """An instance (not a class or function) of a plain class defined in DACBench's modules."""
    cls = type(value)
    return (cls.__module__.startswith(TRUSTED_PREFIX) and hasattr(value, "__dict__")
            and not isinstance(value, (type, types.FunctionType, types.ModuleType)))


def _lower_object(value: Any) -> dict:
    cls = type(value)
    fields = {name: lower(item) for name, item in vars(value).items()}
    return {MARK: "object", "class": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}


def _restore_object(node: dict) -> Any:
    class_path = node["class"]
    fields = {key: restore(item) for key, item in node["fields"].items()}
    cls = _trusted_class(class_path)
    if cls is None:
        return RemoteRecord(class_path, fields)
    # The attributes as they were, without running __init__/__post_init__ again.
    instance = cls.__new__(cls)
    for name, item in fields.items():
        object.__setattr__(instance, name, item)
    return instance


def _trusted_class(class_path: str) -> type | None:
    """The class at `class_path` if it lives in DACBench's modules and imports here."""
    module_name, _, qualname = class_path.partition(":")
    if not module_name.startswith(TRUSTED_PREFIX):
        return None
    try:
        cls = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) else None


def _restore_objdict(node: dict) -> dict:
    items = {key: restore(item) for key, item in node["items"].items()}
    try:
        from dacbench.abstract_benchmark import objdict
    except ImportError:  # a host without DACBench: a plain dict holds the same items
        return items
    return objdict(items)


def _restore_numpy_type(node: dict) -> type:
    return np.dtype(node["name"]).type


def _configspace_to_dict(space: Any) -> dict:
    if hasattr(space, "to_serialized_dict"):  # ConfigSpace >= 1.0
        return space.to_serialized_dict()

    from ConfigSpace.read_and_write import json as cs_json

    return json.loads(cs_json.write(space))


def _restore_configspace(node: dict) -> Any:
    try:
        from ConfigSpace import ConfigurationSpace
    except ImportError:  # a host without ConfigSpace: the serialized form, as DACBench writes it
        return node["value"]
    if hasattr(ConfigurationSpace, "from_serialized_dict"):
        return ConfigurationSpace.from_serialized_dict(node["value"])

    from ConfigSpace.read_and_write import json as cs_json

    return cs_json.read(json.dumps(node["value"]))


_RESTORERS = {
    "objdict": _restore_objdict,
    "object": _restore_object,
    "numpy_type": _restore_numpy_type,
    "configspace": _restore_configspace,
}
