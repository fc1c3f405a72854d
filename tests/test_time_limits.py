"""Every test has a time limit (pytest-timeout): a hang fails that test, named, and the suite goes on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import IMAGE_TIMEOUT

REPO = Path(__file__).resolve().parent.parent


def test_the_suite_runs_with_a_generous_default_limit(request):
    assert request.config.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed"
    assert float(request.config.getini("timeout")) == 600
    assert IMAGE_TIMEOUT > 600


def test_a_hanging_test_fails_by_name_and_the_next_test_still_runs(tmp_path: Path):
    (tmp_path / "test_hang.py").write_text(textwrap.dedent("""
        import time

        def test_hangs_forever():
            time.sleep(3600)

        def test_after_the_hang():
            pass
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir",
         str(tmp_path), "-p", "no:cacheprovider", "--timeout", "2", "-q", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED test_hang.py::test_hangs_forever - Failed: Timeout" in done.stdout, done.stdout
    assert "1 failed, 1 passed" in done.stdout


def test_tests_that_use_images_get_the_longer_limit(tmp_path: Path):
    (tmp_path / "report_limits.py").write_text(textwrap.dedent("""
        def pytest_collection_finish(session):
            for item in session.items:
                mark = item.get_closest_marker("timeout")
                print("LIMIT", item.name, mark.args[0] if mark else "default")
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "report_limits",
         "tests/integration/test_vector.py", "tests/integration/test_packaged_pins.py"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(tmp_path)})
    limits = dict(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("LIMIT"))
    assert limits, done.stdout + done.stderr
    image_user = "test_vector_env_in_image_via_bwrap_as_unprivileged_user[NextStep]"
    assert limits[image_user] == str(IMAGE_TIMEOUT)  # uses base_image
    assert limits["test_wrong_action_shape_is_a_clear_error_and_the_env_stays_usable"] == "default"
    assert {limits[name] for name in limits if name.startswith("test_the_recipe_reproduces")} == {
        str(IMAGE_TIMEOUT)}  # marked in its module
