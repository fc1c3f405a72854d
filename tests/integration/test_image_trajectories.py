"""DACBench benchmarks inside the real base image, run rootless by an unprivileged user through
bwrap, return exactly the trajectories that the same benchmarks return in-process."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest

from dacbench_remote.testing import assert_identical
from tests.conftest import SHARED_DIR, run_as
from tests.needs import need_module
from tests.trajectories import make_local_env, record_trajectory

pytestmark = pytest.mark.integration
TRAJECTORY_SCRIPT = Path(__file__).resolve().parents[1] / "trajectories.py"


@pytest.fixture(scope="module")
def user_workdir(unprivileged_user) -> Path:
    """A directory the unprivileged user owns, with the recording script in it."""
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="trajectories-", dir=SHARED_DIR))
    shutil.copy(TRAJECTORY_SCRIPT, directory / "trajectories.py")
    shutil.chown(directory, unprivileged_user)
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("target", ["FunctionApproximation", "Luby", "ToySGD"])
def test_benchmark_in_image_as_unprivileged_user_matches_in_process(
    target, base_image, unprivileged_user, user_python, user_workdir
):
    need_module("dacbench")
    out = user_workdir / f"{target}.pickle"
    done = run_as(
        unprivileged_user,
        [user_python, str(user_workdir / "trajectories.py"), target, "bwrap", str(base_image),
         str(out)],
        cwd=str(user_workdir), timeout=300,
    )
    assert done.returncode == 0, f"recording as {unprivileged_user} failed:\n{done.stderr[-3000:]}"
    with open(out, "rb") as handle:
        remote = pickle.load(handle)
    expected = record_trajectory(make_local_env(target), seed=0)
    assert len(remote) == len(expected) > 3
    assert_identical(expected, remote, path=target)
