"""Whole trajectories through a remote env (local runtime) equal the in-process ones exactly."""

from __future__ import annotations

import pytest

from dacbench_remote import RemoteRunner
from dacbench_remote.testing import assert_identical
from tests.needs import need_module
from tests.trajectories import BENCHMARKS, make_local_env, record_trajectory

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("target", BENCHMARKS)
def test_remote_trajectory_is_identical_to_in_process(target):
    need_module("dacbench")
    expected = record_trajectory(make_local_env(target), seed=7)
    with RemoteRunner(target, runtime="local") as runner:
        actual = record_trajectory(runner.get_environment(), seed=7)
    assert len(actual) == len(expected) > 3
    assert_identical(expected, actual, path=target)
