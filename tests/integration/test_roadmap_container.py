"""The roadmap's workflow as an unprivileged user with an empty cache and no `runtime=`.

The user writes DACBench code (a configured benchmark object, `experiment_identifier=`, an agent
built from `get_environment()`), and gets a rootless container by default: the image of
exp:0.01 is downloaded from a real HTTP server on 127.0.0.1 (a user catalog publishes the base
image built for the tests, with its sha256), verified, cached and run through bubblewrap.
"""

from __future__ import annotations

import functools
import http.server
import os
import pickle
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from dacbench_remote._sys.files import sha256_file
from dacbench_remote.testing import assert_identical
from tests.conftest import SHARED_DIR, run_as
from tests.roadmap_example import in_process

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[1] / "roadmap_example.py"


@pytest.fixture(scope="module")
def published(base_image, unprivileged_user):
    """A world-readable directory with the script and a catalog whose exp:0.01 is served here."""
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="roadmap-", dir=SHARED_DIR))
    os.chmod(root, 0o755)
    served = root / "served"
    served.mkdir()
    shutil.copy(base_image, served / "base.sif")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    catalog = root / "catalog" / "benchmarks"
    catalog.mkdir(parents=True)
    digest = sha256_file(base_image)
    (catalog / "published.toml").write_text(f"""
family = "test-published"
benchmarks = ["FunctionApproximation", "Luby", "ToySGD"]

[[versions]]
experiment = "exp:0.01"
image = "test-published-0.01.sif"
sha256 = "{digest}"
sources = ["http://127.0.0.1:{server.server_address[1]}/base.sif"]
dacbench = "0.5.6"
""")
    shutil.copy(SCRIPT, root / "roadmap_example.py")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield {"root": root, "catalog": catalog, "sha256": digest}
    server.shutdown()
    shutil.rmtree(root, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Keep the test output clean."""


@pytest.mark.parametrize("name", ["FunctionApproximation", "Luby", "ToySGD"])
def test_roadmap_example_runs_in_a_container_by_default(
    name, published, unprivileged_user, user_python_dacbench
):
    home = Path(tempfile.mkdtemp(prefix=f"home-{name}-", dir=published["root"]))
    shutil.chown(home, unprivileged_user)
    out = home / "facts.pickle"
    done = run_as(
        unprivileged_user,
        ["env", "-i", f"HOME={home}", "PATH=/usr/local/bin:/usr/bin:/bin",
         f"DACBENCH_REMOTE_CATALOG={published['catalog']}",
         user_python_dacbench, str(published["root"] / "roadmap_example.py"), name, str(out)],
        cwd=str(home), timeout=600,
    )
    assert done.returncode == 0, f"the roadmap example failed as {unprivileged_user}:\n" \
                                 f"{done.stderr[-3000:]}"
    with open(out, "rb") as handle:
        facts = pickle.load(handle)
    # A container, the one `auto` picks for this user: Apptainer where installed, else bwrap.
    picked = run_as(unprivileged_user, ["env", "-i", f"HOME={home}",
                                        "PATH=/usr/local/bin:/usr/bin:/bin", user_python_dacbench,
                                        "-c", "from dacbench_remote.runtimes import "
                                        "auto_runtime_name; print(auto_runtime_name())"],
                    cwd=str(home))
    assert picked.returncode == 0, picked.stderr
    assert facts["runtime"] == picked.stdout.strip() and facts["runtime"] in ("apptainer",
                                                                             "bwrap")
    expected = in_process(name)
    assert len(facts["seen"]) == len(expected) > 20
    assert_identical(expected, facts["seen"], path=name)
    records = facts["records"]
    assert len(records) == 10
    assert {(r["runtime"], r["experiment"], r["image_sha256"]) for r in records} == {
        (facts["runtime"], "exp:0.01", published["sha256"])}
    assert (home / "results" / "results.jsonl").is_file()
    cached = list((home / ".cache" / "dacbench-remote").rglob("test-published-0.01.sif"))
    assert len(cached) == 1 and cached[0].stat().st_uid == os.stat(home).st_uid
    # It says what it did to obtain the image, and how long that took.
    assert "test-published-0.01.sif for" in done.stderr
    assert "downloaded from http://127.0.0.1:" in done.stderr and " s\n" in done.stderr
