"""The only reasons a test may skip in CI, and the pytest plugin that fails the run on any other.

CI (`.ci/run`; any run with DACBENCH_REMOTE_STRICT_SKIPS=1 or CI=true) installs everything else
the suite needs (`scripts/install-deps.sh --test`, as root), so another skip is a test that did
not run, and the run must not pass. Tests skip through tests/needs.py, with the texts below.
"""

from __future__ import annotations

import os
import re

import pytest

NO_APPTAINER = "Apptainer/Singularity is not installed here (Debian 12 does not package it)"
NO_DEV_FUSE = "/dev/fuse is missing or not usable on this machine (no FUSE mounts here)"

# (pattern the skip reason must match from its start, why that skip is acceptable in CI)
ALLOWED_SKIPS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(re.escape(NO_APPTAINER)),
     "the real Apptainer binary cannot be installed from Debian 12's archive; the Apptainer "
     "runtime's command lines are tested with a fake binary instead"),
    (re.compile(re.escape(NO_DEV_FUSE)),
     "containers and VMs without /dev/fuse cannot mount squashfuse; the bwrap runtime "
     "extracts images there instead, which the other tests cover"),
]

STRICT_VARIABLE = "DACBENCH_REMOTE_STRICT_SKIPS"


def is_allowed(reason: str) -> bool:
    """True if a skip with this reason is on the allowlist."""
    reason = reason.removeprefix("Skipped: ")
    return any(pattern.match(reason) for pattern, _ in ALLOWED_SKIPS)


def strict() -> bool:
    """True in CI (CI=true, as CI services set it) or with DACBENCH_REMOTE_STRICT_SKIPS=1."""
    return (os.environ.get(STRICT_VARIABLE) == "1"
            or os.environ.get("CI", "").lower() in ("true", "1"))


# -- the plugin (registered by tests/conftest.py) ----------------------------------------------

_skips: list[tuple[str, str]] = []  # (test id, reason) of every skip in this session


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def forbidden_skips() -> list[tuple[str, str]]:
    """This session's skips whose reasons are not on the allowlist."""
    return [(test, reason) for test, reason in _skips if not is_allowed(reason)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, _reason(report)))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module (pytest.skip(allow_module_level=True), importorskip)
        _skips.append((report.nodeid, _reason(report)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if strict() and forbidden_skips() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not strict():
        return
    forbidden = forbidden_skips()
    if forbidden:
        terminalreporter.section("skips not on the allowlist", red=True)
        for test, reason in forbidden:
            terminalreporter.line(f"{test}: {reason}")
        terminalreporter.line(
            f"FAILED: {len(forbidden)} test(s) skipped for a reason CI does not allow. Install "
            "what they need (bash scripts/install-deps.sh --test, run as root), or, if the skip "
            "is legitimate on CI machines, add its reason to tests/skip_allowlist.py", red=True)
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        terminalreporter.line("FAILED: no tests ran; check the paths and the -k/-m selection",
                              red=True)
