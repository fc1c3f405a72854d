"""assert_identical must catch every kind of inexactness and say where it is."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from dacbench_remote.testing import assert_identical


@pytest.mark.parametrize(
    ("expected", "actual", "message"),
    [
        (1, 1.0, r"^value: type int != float"),
        (np.float32(1.5), np.float64(1.5), r"type numpy\.float32 != numpy\.float64"),
        (np.float32(1.5), np.float32(2.5), r"values differ"),
        ((1, 2), [1, 2], r"type tuple != list"),
        (np.zeros(3, "<f4"), np.zeros(3, ">f4"), r"dtype <f4 != >f4"),
        (np.zeros(3), np.zeros((3, 1)), r"shape \(3,\) != \(3, 1\)"),
        (np.array([1.0, math.nan]), np.array([1.0, 2.0]), r"first at index \(1,\)"),
        (np.array([0.0]), np.array([-0.0]), r"first at index \(0,\)"),
        (np.array([1 + 1j]), np.array([1 - 1j]), r"values differ"),
        (np.array([1, 2]), np.array([1, 3]), r"first at index \(1,\)"),
        (-0.0, 0.0, r"-0\.0 != 0\.0"),
        (math.nan, 1.0, r"nan != 1\.0"),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, r"value\.keys\(\)\[0\]: 'a' != 'b'"),
        ({"obs": [1, (2, "x")]}, {"obs": [1, (2, "y")]}, r"^value\['obs'\]\[1\]\[1\]: 'x' != 'y'"),
        ([1, 2], [1, 2, 3], r"length 2 != 3"),
        (
            spaces.Box(0, 1, (2,), dtype=np.float64),
            spaces.Box(0, 1 + 1e-12, (2,), dtype=np.float64),
            r"value\.high",
        ),
        (spaces.Discrete(3), spaces.Discrete(3, start=1), r"Discrete"),
        (
            spaces.Text(3, charset="ab"),
            spaces.Text(3, charset="ba"),
            r"value\.character_list",
        ),
    ],
)
def test_differences_are_reported_with_their_path(expected: Any, actual: Any, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        assert_identical(expected, actual)


@pytest.mark.parametrize(
    "value",
    [
        {"x": [math.nan, -0.0, np.float32(math.nan)], 1: (None, b"z")},
        np.array([math.nan, -0.0, math.inf]),
        np.array(["2020-01-01", "NaT"], "M8[D]"),
        spaces.Dict({"a": spaces.Box(-np.inf, 1, (2,)), "b": spaces.Sequence(spaces.Discrete(2))}),
    ],
)
def test_identical_values_pass(value: Any) -> None:
    assert_identical(value, value)


def test_custom_root_name_is_used() -> None:
    with pytest.raises(AssertionError, match=r"^step\[4\]\['x'\]: "):
        assert_identical((0, 0, 0, 0, {"x": 1}), (0, 0, 0, 0, {"x": 2}), path="step")
