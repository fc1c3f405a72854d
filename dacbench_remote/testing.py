"""Test helpers shared by the codec and trajectory tests: exact, type-for-type comparison."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np


def _fail(path: str, message: str) -> None:
    raise AssertionError(f"{path}: {message}")


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _same_float(a: float, b: float) -> bool:
    if a != a or b != b:
        return a != a and b != b
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _assert_arrays(expected: np.ndarray, actual: np.ndarray, path: str) -> None:
    if expected.dtype != actual.dtype or expected.dtype.str != actual.dtype.str:
        _fail(path, f"dtype {expected.dtype.str} != {actual.dtype.str}")
    if expected.shape != actual.shape:
        _fail(path, f"shape {expected.shape} != {actual.shape}")
    kind = expected.dtype.kind
    if kind in "fc":
        parts = [(expected.real, actual.real), (expected.imag, actual.imag)]
        if kind == "f":
            parts = parts[:1]
        for e, a in parts:
            e_nan, a_nan = np.isnan(e), np.isnan(a)
            same = (e_nan == a_nan) & (e_nan | ((e == a) & (np.signbit(e) == np.signbit(a))))
            if not same.all():
                index = tuple(int(i) for i in np.argwhere(~same)[0])
                _fail(path, f"values differ first at index {index}: {e[index]!r} != {a[index]!r}")
    elif kind in "mM":
        e_nat, a_nat = np.isnat(expected), np.isnat(actual)
        if not (np.array_equal(e_nat, a_nat) and np.array_equal(expected[~e_nat], actual[~a_nat])):
            _fail(path, f"values differ: {expected!r} != {actual!r}")
    elif not np.array_equal(expected, actual):
        index = tuple(int(i) for i in np.argwhere(expected != actual)[0])
        _fail(path, f"values differ first at index {index}: {expected[index]!r} != {actual[index]!r}")


def _assert_space(expected: Any, actual: Any, path: str) -> None:
    """Spaces compare loosely (Box uses allclose); check the defining attributes exactly."""
    if expected != actual:
        _fail(path, f"{expected!r} != {actual!r}")
    name = type(expected).__name__
    if name == "Box":
        for attr in ("low", "high"):
            _assert_arrays(getattr(expected, attr), getattr(actual, attr), f"{path}.{attr}")
    elif name == "Discrete":
        for attr in ("n", "start", "dtype"):
            assert_identical(getattr(expected, attr), getattr(actual, attr), f"{path}.{attr}")
    elif name == "MultiDiscrete":
        for attr in ("nvec", "start"):
            _assert_arrays(getattr(expected, attr), getattr(actual, attr), f"{path}.{attr}")
    elif name == "MultiBinary":
        assert_identical(expected.n, actual.n, f"{path}.n")
    elif name == "Text":
        for attr in ("min_length", "max_length", "character_list"):
            assert_identical(getattr(expected, attr), getattr(actual, attr), f"{path}.{attr}")
    elif name in ("Tuple", "OneOf", "Dict"):
        assert_identical(expected.spaces, actual.spaces, f"{path}.spaces")
    elif name == "Sequence":
        assert_identical(expected.stack, actual.stack, f"{path}.stack")
        assert_identical(expected.feature_space, actual.feature_space, f"{path}.feature_space")
    elif name == "Graph":
        assert_identical(expected.node_space, actual.node_space, f"{path}.node_space")
        assert_identical(expected.edge_space, actual.edge_space, f"{path}.edge_space")


def assert_identical(expected: Any, actual: Any, path: str = "value") -> None:
    """Assert ``actual`` is ``expected`` rebuilt exactly: same types, dtypes, shapes and values.

    NaN equals NaN, -0.0 differs from 0.0, dicts compare in key order. Raises ``AssertionError``
    naming the path of the first difference, e.g. ``value[4]['raw_distances'][1]: ...``.
    """
    te, ta = type(expected), type(actual)
    if te is not ta:
        _fail(path, f"type {_type_name(te)} != {_type_name(ta)}")
    if te is np.ndarray:
        _assert_arrays(expected, actual, path)
    elif isinstance(expected, np.generic):
        _assert_arrays(np.asarray(expected), np.asarray(actual), path)
    elif te is float:
        if not _same_float(expected, actual):
            _fail(path, f"{expected!r} != {actual!r}")
    elif te is complex:
        if not (_same_float(expected.real, actual.real) and _same_float(expected.imag, actual.imag)):
            _fail(path, f"{expected!r} != {actual!r}")
    elif isinstance(expected, (list, tuple)):
        if len(expected) != len(actual):
            _fail(path, f"length {len(expected)} != {len(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_identical(e, a, f"{path}[{i}]")
    elif isinstance(expected, dict):
        if len(expected) != len(actual):
            _fail(path, f"{len(expected)} keys != {len(actual)} keys")
        for i, ((ek, ev), (ak, av)) in enumerate(zip(expected.items(), actual.items(), strict=True)):
            assert_identical(ek, ak, f"{path}.keys()[{i}]")
            assert_identical(ev, av, f"{path}[{ek!r}]")
    elif _is_space(expected):
        _assert_space(expected, actual, path)
    elif expected != actual:
        _fail(path, f"{expected!r} != {actual!r}")


def _is_space(value: Any) -> bool:
    gym = sys.modules.get("gymnasium")
    return gym is not None and isinstance(value, gym.spaces.Space)
