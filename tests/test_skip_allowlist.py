"""The skip policy: in CI a skip not on the allowlist fails the run; elsewhere skips stay skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skip_allowlist import NO_APPTAINER, NO_DEV_FUSE, STRICT_VARIABLE, is_allowed

REPO = Path(__file__).resolve().parents[1]

SAMPLE = f"""
import pytest

def test_passes():
    pass

def test_needs_apptainer():
    pytest.skip({NO_APPTAINER!r})

@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert False
"""
FORBIDDEN = """
import pytest

def test_needs_a_tool():
    pytest.skip("mmdebstrap missing")
"""
MODULE_SKIP = """
import pytest

pytest.importorskip("no_such_module_anywhere")

def test_never_collected():
    pass
"""


def run_pytest(tmp_path: Path, files: dict[str, str], **env: str) -> subprocess.CompletedProcess:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", STRICT_VARIABLE)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.skip_allowlist", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
        cwd=REPO, env={**environ, **env}, capture_output=True, text=True, timeout=120)


def test_allowed_skips_and_xfails_pass_in_ci(tmp_path):
    done = run_pytest(tmp_path, {"test_sample.py": SAMPLE}, **{STRICT_VARIABLE: "1"})
    assert done.returncode == 0, done.stdout
    assert "1 passed, 1 skipped, 1 xfailed" in done.stdout
    assert "not on the allowlist" not in done.stdout


@pytest.mark.parametrize("env", [{STRICT_VARIABLE: "1"}, {"CI": "true"}])
def test_a_skip_not_on_the_allowlist_fails_the_run_in_ci_and_is_listed(tmp_path, env):
    done = run_pytest(tmp_path, {"test_sample.py": SAMPLE, "test_tool.py": FORBIDDEN}, **env)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "test_tool.py::test_needs_a_tool: mmdebstrap missing" in done.stdout
    assert "FAILED: 1 test(s) skipped for a reason CI does not allow" in done.stdout
    assert "test_needs_apptainer" not in done.stdout.split("skips not on the allowlist")[1]


def test_outside_ci_a_skip_is_only_a_skip(tmp_path):
    done = run_pytest(tmp_path, {"test_tool.py": FORBIDDEN})
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout and "not on the allowlist" not in done.stdout


def test_a_module_skipped_at_import_counts_too(tmp_path):
    done = run_pytest(tmp_path, {"test_sample.py": SAMPLE, "test_module.py": MODULE_SKIP},
                      **{STRICT_VARIABLE: "1"})
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "test_module.py: could not import 'no_such_module_anywhere'" in done.stdout


def test_a_run_with_no_tests_fails_and_says_so(tmp_path):
    done = run_pytest(tmp_path, {"test_empty.py": "X = 1\n"}, **{STRICT_VARIABLE: "1"})
    assert done.returncode == pytest.ExitCode.NO_TESTS_COLLECTED
    assert "FAILED: no tests ran" in done.stdout


@pytest.mark.parametrize(("reason", "allowed"), [
    (NO_APPTAINER, True),
    (f"Skipped: {NO_APPTAINER}", True),
    (f"{NO_DEV_FUSE}: fusermount: mount failed: Operation not permitted", True),
    ("squashfuse/fusermount missing or /dev/fuse not usable by this user", False),
    ("runuser not found", False),
    (f"because {NO_APPTAINER}", False),  # the reason must start with an allowed text
])
def test_allowlist_matches_reasons_from_their_start(reason, allowed):
    assert is_allowed(reason) is allowed
