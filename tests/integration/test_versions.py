"""Experiment versions with conflicting dependencies, side by side, each proven against itself.

Every benchmark runs in its own image (DACBench 0.3.0 with numpy 1.26/gymnasium 0.29, DACBench
0.5.6 with numpy 2.4/gymnasium 1.4; CMAES and Theory in their families' images) through bwrap as
an unprivileged user whose Python has no DACBench. Each trajectory must equal, type for type and
value for value, the in-process one from a venv holding exactly that image's pins, with the
global RNGs seeded the way the server seeds them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from dacbench_remote.images.sif import SifImage
from dacbench_remote.testing import assert_identical
from dacbench_remote.wire import codec
from tests.conftest import IMAGE_TIMEOUT, SHARED_DIR, _user_venv, run_as

pytestmark = [pytest.mark.integration, pytest.mark.timeout(IMAGE_TIMEOUT)]  # builds images
REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [REPO / "tests" / "version_trajectories.py", REPO / "tests" / "wire_values.py"]
SEED = 0
# job name -> (recipe stem, benchmark)
VERSIONS = {
    "Luby@0.3.0": ("dacbench-base-0.3.0", "Luby"),
    "FunctionApproximation@0.3.0": ("dacbench-base-0.3.0", "FunctionApproximation"),
    "ToySGD@0.3.0": ("dacbench-base-0.3.0", "ToySGD"),
    "Luby@0.5.6": ("dacbench-base", "Luby"),
    "CMAES@0.5.6": ("dacbench-cmaes", "CMAES"),
    "Theory@0.5.6": ("dacbench-theory", "Theory"),
}
SIDE_BY_SIDE = ["Luby@0.3.0", "Luby@0.5.6", "CMAES@0.5.6", "Theory@0.5.6"]
_PIN = re.compile(r"(?<![\w.=-])([A-Za-z][\w.-]*)==([0-9][\w.+-]*)")


def recipe_pins(stem: str) -> list[str]:
    """Every `name==version` the recipe's pip install pins, in recipe order."""
    text = (REPO / "recipes" / f"{stem}.def").read_text()
    post = text.split("%post", 1)[1].split("\n%", 1)[0]
    return [f"{name}=={version}" for name, version in _PIN.findall(post)]


def pins_python(stem: str) -> str:
    """A venv holding exactly the image's pins (and dacbench-remote for the codec); one per set."""
    pins = recipe_pins(stem)
    digest = hashlib.sha256("\n".join(sorted(pins)).encode()).hexdigest()[:10]
    return _user_venv(f"pins-{digest}", ["setuptools>=64"], tuple(pins))


@pytest.fixture(scope="module")
def workdir(unprivileged_user) -> Path:
    """A directory the unprivileged user owns, holding the driver scripts and all outputs."""
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="versions-", dir=SHARED_DIR))
    for script in SCRIPTS:
        shutil.copy(script, directory / script.name)
    shutil.chown(directory, unprivileged_user)
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def run_checked(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{what} failed:\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def references(workdir) -> dict[str, Path]:
    """name -> the in-process reference trajectory file (recorded on first use)."""
    paths: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in paths:
            stem, benchmark = VERSIONS[name]
            out = workdir / f"reference-{name}.json"
            run_checked([pins_python(stem), str(workdir / "version_trajectories.py"), "local",
                         benchmark, str(SEED), str(out)], f"in-process reference of {name}",
                        cwd=str(workdir), env={**os.environ, "MPLBACKEND": "Agg"})
            out.chmod(0o644)
            paths[name] = out
        return paths[name]

    return get


def run_remote(names: list[str], workdir: Path, user: str, python: str, recipe_image,
               references) -> dict:
    """Replay the references of `names` from one host process as `user`; its decoded report."""
    jobs = [{"name": name, "benchmark": VERSIONS[name][1],
             "image": str(recipe_image(VERSIONS[name][0])), "reference": str(references(name))}
            for name in names]
    tag = hashlib.sha256(" ".join(names).encode()).hexdigest()[:8]
    jobs_file, out = workdir / f"jobs-{tag}.json", workdir / f"remote-{tag}.json"
    jobs_file.write_text(json.dumps(jobs))
    jobs_file.chmod(0o644)
    done = run_as(user, [python, str(workdir / "version_trajectories.py"), "remote",
                         str(jobs_file), str(out)], cwd=str(workdir), timeout=900)
    assert done.returncode == 0, f"remote replay of {names} failed:\n{done.stderr[-3000:]}"
    return codec.loads(out.read_text())


def assert_same_as_reference(name: str, remote: dict, references) -> None:
    expected = codec.loads(references(name).read_text())
    actual = remote["results"][name]
    assert not isinstance(actual, str), f"{name} failed remotely: {actual}"
    assert len(expected) > 3, f"{name}: the reference trajectory is too short to prove anything"
    assert_identical(expected, actual, path=name)


@pytest.mark.parametrize("name", list(VERSIONS))
def test_benchmark_in_its_image_equals_in_process_run_with_the_images_pins(
    name, workdir, unprivileged_user, user_python, recipe_image, references
):
    remote = run_remote([name], workdir, unprivileged_user, user_python, recipe_image, references)
    assert_same_as_reference(name, remote, references)
    assert remote["dacbench_on_host"] is False


def test_four_versions_run_side_by_side_from_one_host_process_without_dacbench(
    workdir, unprivileged_user, user_python, recipe_image, references
):
    no_dacbench = run_as(unprivileged_user, [user_python, "-c", "import dacbench"])
    assert no_dacbench.returncode != 0 and "No module named 'dacbench'" in no_dacbench.stderr
    remote = run_remote(SIDE_BY_SIDE, workdir, unprivileged_user, user_python, recipe_image,
                        references)
    for name in SIDE_BY_SIDE:
        assert_same_as_reference(name, remote, references)
    pids = remote["server_pids"]
    assert sorted(pids) == sorted(SIDE_BY_SIDE)
    assert len({pid for pid, _ in pids.values()}) == 4
    assert all(alive for _, alive in pids.values()), pids


def test_cmaes_repeats_in_process_only_with_the_servers_global_seeding(workdir):
    done = run_checked([pins_python("dacbench-cmaes"), str(workdir / "version_trajectories.py"),
                        "repeat", "CMAES", str(SEED)], "repeating CMAES in-process",
                       cwd=str(workdir), env={**os.environ, "MPLBACKEND": "Agg"})
    # Why the server seeds random and numpy.random: DACBench's own seeding is not enough.
    assert json.loads(done.stdout) == {"unseeded": False, "seeded": True}


@pytest.mark.parametrize("stem", ["dacbench-base-0.3.0", "dacbench-base", "dacbench-cmaes",
                                  "dacbench-theory"])
def test_image_labels_name_the_dacbench_numpy_and_gymnasium_it_pins(stem, recipe_image):
    labels = SifImage.open(recipe_image(stem)).labels()
    pins = dict(pin.lower().split("==") for pin in recipe_pins(stem))
    for package in ("dacbench", "numpy", "gymnasium"):
        assert labels[f"org.dacbench-remote.{package}-version"] == pins[package], (stem, package)


def test_gymnasium_029_and_numpy_126_encode_the_golden_wire_values(workdir):
    old = run_checked([pins_python("dacbench-base-0.3.0"), str(workdir / "wire_values.py")],
                      "encoding with DACBench 0.3.0's pins", cwd=str(workdir))
    versions = run_checked([pins_python("dacbench-base-0.3.0"), "-c",
                            "import gymnasium, numpy; print(gymnasium.__version__, "
                            "numpy.__version__)"], "reading the old versions")
    assert versions.stdout.split() == ["0.29.1", "1.26.4"]
    golden = json.loads((REPO / "tests" / "data" / "wire_golden.json").read_text())
    assert json.loads(old.stdout) == golden
