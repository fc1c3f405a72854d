"""Creates the environments a server hosts from a benchmark description (a DACBench name,
`gymnasium:ID` or `module:attr`), seeding the global RNGs first as DACBench benchmarks need."""

from __future__ import annotations

import importlib
import json
import random
import sys
from typing import Any

import numpy

from ..errors import BadConfig, DacbenchRemoteError, UnknownBenchmark

# ---------------------------------------------------------------------------------------------
# Global random number generators
#
# Some benchmarks draw from Python's `random` or numpy's legacy global RNG (DACBench 0.5.6's
# CMAES, through modcma and ioh), which `reset(seed=...)` does not touch: seeded here, the same
# experiment and seed give the same trajectory in every server process.

_LEGACY_SEED_LIMIT = 2**32


def seed_global_rngs(seed: Any) -> None:
    """Seed `random` and `numpy.random`'s legacy global RNG with `seed` (an int; None: leave them)."""
    if seed is None:
        return
    seed = int(seed)
    random.seed(seed)
    numpy.random.seed(_legacy_numpy_seed(seed))


def first_seed(seed: Any) -> Any:
    """The seed for the global RNGs: a vector env's per-env list gives its first non-None one."""
    if isinstance(seed, (list, tuple)):
        return next((item for item in seed if item is not None), None)
    return seed


def _legacy_numpy_seed(seed: int) -> int | list[int]:
    """`numpy.random.seed` takes 0 <= seed < 2**32; larger seeds as 32-bit words, like SeedSequence."""
    if 0 <= seed < _LEGACY_SEED_LIMIT:
        return seed
    magnitude, words = abs(seed), []
    while magnitude:
        words.append(magnitude % _LEGACY_SEED_LIMIT)
        magnitude //= _LEGACY_SEED_LIMIT
    return words


def benchmark_seed(benchmark: Any) -> int | None:
    """The DACBench benchmark's config key `seed` when it is an int, else None."""
    config = getattr(benchmark, "config", None)
    seed = config.get("seed") if hasattr(config, "get") else None
    if isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)):
        return None
    return int(seed)


def environment_of(benchmark: Any):
    """`benchmark.get_environment()`, with the global RNGs seeded by the benchmark's seed first."""
    seed_global_rngs(benchmark_seed(benchmark))
    return benchmark.get_environment()


# ---------------------------------------------------------------------------------------------
# Creating environments from a benchmark description


def create_env(target: str, config: Any = None, kwargs: dict | None = None):
    """Build the env named by `target`: a DACBench benchmark name, `gymnasium:ID`, or `module:attr`.

    Returns the env. Raises UnknownBenchmark when the target does not exist here and BadConfig
    when it rejects `config` or `kwargs`; what the benchmark itself raises passes through.
    """
    kwargs = dict(kwargs or {})
    if target.startswith("gymnasium:"):
        return _make_gymnasium(target.partition(":")[2], kwargs)
    if ":" in target:
        obj = _import_target(target)
        if isinstance(obj, type) and hasattr(obj, "get_environment"):
            return _from_benchmark_class(obj, config)
        if not callable(obj):
            raise UnknownBenchmark(f"{target} is not callable")
        try:
            return obj(**kwargs) if config is None else obj(config, **kwargs)
        except TypeError as exc:
            raise BadConfig(f"{target}(...) rejected its arguments: {exc}") from exc
    return _from_benchmark_class(_dacbench_class(target), config)


def _make_gymnasium(env_id: str, kwargs: dict):
    import gymnasium

    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        raise UnknownBenchmark(f"gymnasium has no environment {env_id!r}: {exc}") from exc
    try:
        return gymnasium.make(env_id, **kwargs)
    except TypeError as exc:
        raise BadConfig(f"gymnasium:{env_id} rejected {kwargs}: {exc}") from exc


def _import_target(target: str):
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UnknownBenchmark(
                f"cannot import {module_name!r} for benchmark {target!r} in this "
                f"interpreter/image ({sys.executable}): {exc}"
            ) from exc
        raise
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UnknownBenchmark(f"module {module_name!r} has no attribute {attr!r}") from exc


def _dacbench_class(name: str):
    try:
        import dacbench.benchmarks as benchmarks
    except ModuleNotFoundError as exc:
        raise UnknownBenchmark(
            f"DACBench is not installed where the server runs ({sys.executable}), so benchmark "
            f"{name!r} does not exist here; use an image that contains it"
        ) from exc
    available = sorted(n for n in benchmarks.__all__ if n.endswith("Benchmark"))
    wanted = {name.lower(), name.lower() + "benchmark"}
    for candidate in available:
        if candidate.lower() in wanted:
            return getattr(benchmarks, candidate)
    names = ", ".join(n.removesuffix("Benchmark") for n in available)
    raise UnknownBenchmark(f"unknown DACBench benchmark {name!r}; available here: {names}")


def benchmark_object(target: str, config: Any = None):
    """The DACBench benchmark object `target` names (a DACBench name, or `module:attr` naming a
    benchmark class), configured with `config` but with no env built yet.

    Raises UnknownBenchmark when it does not exist here, BadConfig when it is no DACBench
    benchmark (a gymnasium id, an env factory) or rejects `config`.
    """
    if target.startswith("gymnasium:"):
        raise BadConfig(f"{target} is a gymnasium environment, not a DACBench benchmark")
    cls = _import_target(target) if ":" in target else _dacbench_class(target)
    if not (isinstance(cls, type) and hasattr(cls, "get_environment")):
        raise BadConfig(f"{target} is not a DACBench benchmark class (one with get_environment)")
    return _rejecting_config(cls, config, lambda: _configured(cls, config))


def _configured(cls, config):
    """DACBench: no config → defaults; a dict or JSON text → `from_json` (missing keys default)."""
    if config is None:
        return cls()
    return cls.from_json(config if isinstance(config, str) else json.dumps(config))


def _from_benchmark_class(cls, config):
    return _rejecting_config(cls, config, lambda: environment_of(_configured(cls, config)))


def _rejecting_config(cls, config, build):
    """`build()`, with what it raised for a given config turned into BadConfig."""
    try:
        return build()
    except DacbenchRemoteError:
        raise
    except Exception as exc:
        if config is None:
            raise
        raise BadConfig(
            f"{cls.__name__} rejected its config: {type(exc).__name__}: {exc}"
        ) from exc
