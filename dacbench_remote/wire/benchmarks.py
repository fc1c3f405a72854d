"""A configured DACBench benchmark object, carried to the server and rebuilt there exactly.

DACBench's own container ships `class_to_str()` + `to_json()` and rebuilds with `from_json`; that
drops edited instance sets, turns tuples and lists into arrays and casts some float lists to
int. We carry the class path, the config itself (through `dacvalues` and the exact codec) and
the wrapper list, and the server puts that config on a fresh instance of the class, so its
`get_environment()` builds what the host's would.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from ..errors import BadConfig, UnknownBenchmark
from . import codec
from .dacvalues import lower, restore

# Wrappers are rebuilt by class path; only these packages' classes are imported for that.
TRUSTED_WRAPPER_MODULES = ("dacbench.", "gymnasium.")


def is_benchmark_object(value: Any) -> bool:
    """True for a DACBench benchmark instance (anything with get_environment() and a config)."""
    return (not isinstance(value, (str, type)) and callable(getattr(value, "get_environment", None))
            and hasattr(value, "config"))


def benchmark_name(benchmark: Any) -> str:
    """The catalog name of a benchmark object: its class name without "Benchmark"."""
    return type(benchmark).__name__.removesuffix("Benchmark")


def describe_benchmark(benchmark: Any) -> dict:
    """Class path, config and wrappers of `benchmark`, encoded for the wire (BadConfig if it cannot).

    The result is the codec's JSON-able tree: encoded once, when the runner is made (as DACBench
    serialises the benchmark then), and sent as it is for every environment.
    """
    cls = type(benchmark)
    config = benchmark.config
    description = {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": lower(config) if config is not None else None,
        "wrappers": [_describe_wrapper(f) for f in getattr(benchmark, "wrap_funcs", None) or []],
    }
    try:
        return codec.encode(description, root="benchmark")
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadConfig(
            f"the {cls.__name__} object cannot be sent to the server: {exc}. Keep the config "
            "to numbers, strings, lists, dicts, numpy arrays and DACBench's own instance types"
        ) from None


def rebuild_benchmark(description: dict) -> Any:
    """The benchmark object on the server: a fresh instance of its class with the host's config."""
    cls = _import(description["class"])
    benchmark = cls()
    if description["config"] is not None:
        benchmark.config = restore(description["config"])
    benchmark.wrap_funcs = [_rebuild_wrapper(w) for w in description["wrappers"]]
    return benchmark


def _describe_wrapper(wrap: Any) -> dict:
    if isinstance(wrap, type):
        wrap = functools.partial(wrap)
    if not isinstance(wrap, functools.partial) or not isinstance(wrap.func, type):
        raise BadConfig(
            f"wrapper {wrap!r} of the benchmark cannot be sent; add wrappers with "
            "benchmark.register_wrapper(WrapperClass, ...) as DACBench does"
        )
    cls = wrap.func
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "args": lower(list(wrap.args)),
            "kwargs": lower(dict(wrap.keywords))}


def _rebuild_wrapper(node: dict) -> functools.partial:
    if not node["class"].startswith(TRUSTED_WRAPPER_MODULES):
        raise BadConfig(f"wrapper {node['class']} is not from DACBench or gymnasium; refused")
    return functools.partial(_import(node["class"]), *restore(node["args"]),
                             **restore(node["kwargs"]))


def _import(class_path: str) -> Any:
    module_name, _, qualname = class_path.partition(":")
    try:
        value = importlib.import_module(module_name)
        for part in qualname.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:

        raise UnknownBenchmark(f"{class_path} does not exist where the server runs: {exc}") from exc
    return value
