"""Integration fixtures: images of the repository's recipes, each built at most once per session
with our builder and cached across sessions.

The cache key hashes the recipe and every file of `dacbench_remote/` (which %files copies in), so
a changed server rebuilds the images and an unchanged one is reused. Images are world-readable:
tests run them as an unprivileged user too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.needs import need_module, need_root, need_tools

REPO = Path(__file__).resolve().parents[2]
BASE_RECIPE = REPO / "recipes" / "dacbench-base.def"
DEFAULT_IMAGE_DIR = Path("/var/tmp/dacbench-remote-tests/images")
IMAGE_DIR_VARIABLE = "DACBENCH_REMOTE_TEST_IMAGE_DIR"
STALE_AFTER = 24 * 3600  # other keys' images unused this long are removed


def image_cache_dir() -> Path:
    return Path(os.environ.get(IMAGE_DIR_VARIABLE) or DEFAULT_IMAGE_DIR)


def image_key(recipe: Path = BASE_RECIPE) -> str:
    """Hash of the recipe and the package sources the image is built from."""
    digest = hashlib.sha256()
    digest.update(recipe.read_bytes())
    package = REPO / "dacbench_remote"
    for path in sorted(package.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def host_apt_lists() -> list[str]:
    """The host's apt list files: a build must never touch them."""
    lists = Path("/var/lib/apt/lists")
    return sorted(p.name for p in lists.iterdir()) if lists.is_dir() else []


def _make_world_readable_dirs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for path in [directory, *directory.parents]:
        if path == Path("/var/tmp") or path == Path("/") or not path.exists():
            break
        if path.stat().st_uid == os.geteuid():
            path.chmod(path.stat().st_mode | 0o755)


def _prune(directory: Path, stem: str, keep: str) -> None:
    """Remove this recipe's images (and records) of other keys that were unused for a day."""
    cutoff = time.time() - STALE_AFTER
    mine = re.compile(re.escape(stem) + r"-[0-9a-f]{16}\.(sif|json)")
    for path in directory.iterdir():
        if mine.fullmatch(path.name) and keep not in path.name and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


# The builder of the test images, named: the one that made the catalog's pins (which
# test_packaged_pins checks against these images), also where Apptainer is installed.
TEST_IMAGE_BUILDER = "native"
NATIVE_BUILDER_NAME = "dacbench-remote"  # what BuildResult.builder says for it


def build_recipe_image(recipe: Path) -> dict:
    """Build record of `recipe`'s image: path, sha256, size, phases (s), %test output, built_now.

    Built once per key with our native builder; concurrent sessions (or developers) wait for
    one build instead of racing.
    """
    from dacbench_remote.images import build, native

    need_tools(*native.missing_tools())
    need_root(f"building {recipe.name} with the native builder (mmdebstrap as root)")
    directory = image_cache_dir()
    _make_world_readable_dirs(directory)
    key = image_key(recipe)
    image = directory / f"{recipe.stem}-{key}.sif"
    record_path = directory / f"{recipe.stem}-{key}.json"
    with open(directory / f".{recipe.stem}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if image.is_file() and record.get("builder") == NATIVE_BUILDER_NAME:
            os.utime(image)
            return {**record, "built_now": False}
        messages: list[str] = []
        lists_before = host_apt_lists()
        started = time.monotonic()
        result = build.build_image(recipe, image, context=REPO, progress=messages.append,
                                   workdir=Path("/var/tmp"), builder=TEST_IMAGE_BUILDER)
        image.chmod(0o644)
        record = {
            "path": str(result.path), "sha256": result.sha256, "size": result.size,
            "builder": result.builder, "phases": result.phases, "key": key,
            "recipe": recipe.name, "seconds": round(time.monotonic() - started, 1),
            "test_output": [m for m in messages if m.startswith("test: ")],
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host_apt_lists_unchanged": host_apt_lists() == lists_before,
        }
        tmp = record_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.chmod(0o644)
        tmp.replace(record_path)
        _prune(directory, recipe.stem, key)
        return {**record, "built_now": True}


@pytest.fixture(scope="session")
def recipe_image_info() -> Callable[[str], dict]:
    """`get("dacbench-cmaes")`: the build record of recipes/dacbench-cmaes.def, built on first use."""
    records: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in records:
            records[name] = build_recipe_image(REPO / "recipes" / f"{name}.def")
        return records[name]

    return get


@pytest.fixture(scope="session")
def recipe_image(recipe_image_info) -> Callable[[str], Path]:
    """`get("dacbench-theory")`: the world-readable .sif built from recipes/dacbench-theory.def."""
    return lambda name: Path(recipe_image_info(name)["path"])


@pytest.fixture(scope="session")
def base_image_info(recipe_image_info) -> dict:
    """Build record of the base image: path, sha256, size, phases (s), %test output, built_now."""
    return recipe_image_info("dacbench-base")


@pytest.fixture(scope="session")
def base_image(base_image_info: dict) -> Path:
    """recipes/dacbench-base.def built with our builder: a world-readable .sif path."""
    return Path(base_image_info["path"])


@pytest.fixture(scope="session")
def standin_image() -> Path:
    """A small real image whose runscript is a stand-in line server (see runtime_images.py)."""
    from .runtime_images import build_standin_image

    return build_standin_image()


SLURM_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
# Test sessions that use the one-node Slurm hold a shared flock on this file while they do; the
# marker says a test session (not a person) brought the cluster up.
SLURM_USERS = Path("/tmp/dacbench-remote-slurm.users")
SLURM_STARTED_BY_TESTS = Path("/tmp/dacbench-remote-slurm.started-by-tests")


def _slurm_cluster(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM_SCRIPT), action], capture_output=True, text=True)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    """A one-node Slurm on this machine (scripts/slurm-cluster.sh), up for the module.

    Two test sessions may use it at once (a developer's and CI's, or two checkouts): the last
    one to finish takes it down, and only if a test session brought it up (`down` cancels every
    job, so taking it down under another session would fail that session's trials).
    """
    need_tools("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel")
    need_root("bringing up slurmctld/slurmd/munged")
    need_module("submitit")
    with open(SLURM_USERS, "a") as users:
        with open(SLURM_USERS.with_suffix(".starting"), "a") as starting:
            fcntl.flock(starting, fcntl.LOCK_EX)  # one session at a time brings it up
            fcntl.flock(users, fcntl.LOCK_SH)
            if _slurm_cluster("status").returncode != 0:
                SLURM_STARTED_BY_TESTS.touch()
            up = _slurm_cluster("up")
        assert up.returncode == 0, f"slurm-cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else is using it
        except BlockingIOError:
            return
        if SLURM_STARTED_BY_TESTS.exists():
            down = _slurm_cluster("down")
            assert down.returncode == 0, down.stderr
            SLURM_STARTED_BY_TESTS.unlink()
            assert _slurm_cluster("status").returncode != 0
