"""Wheelhouses: checked, staged into the build, handed to pip, and the wheels an image holds found
by comparing with what pip itself installed."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dacbench_remote.errors import BuildError
from dacbench_remote.images import layout, native
from dacbench_remote.images.build import build_image
from dacbench_remote.images.recipe import parse_recipe
from dacbench_remote.images.wheelhouse import (
    PipSources,
    check_wheelhouse,
    pip_options,
    stage_wheelhouse,
    wheels_in_root,
)

REPO = Path(__file__).resolve().parent.parent


def make_wheel(directory: Path, name: str, version: str, source: str) -> Path:
    """A pure-Python wheel of one module whose text is `source`, as pip expects it."""
    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
    }
    rows = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{path},sha256={digest},{len(data)}")
    rows.append(f"{dist_info}/RECORD,,")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(rows) + "\n")
    return wheel


def pip_install(wheel: Path, target: Path) -> None:
    """Install `wheel` with the real pip, offline, into `target` (a site directory)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})


def test_the_wheels_pip_installed_are_found_by_their_files(tmp_path: Path):
    installed = make_wheel(tmp_path / "house", "probe_a", "1.0", "VALUE = 1\n")
    other = make_wheel(tmp_path / "house", "probe_b", "2.0", "VALUE = 2\n")
    site = tmp_path / "site"
    pip_install(installed, site)
    found = wheels_in_root([installed, other], [site])
    assert found == [{"file": installed.name,
                      "sha256": hashlib.sha256(installed.read_bytes()).hexdigest()}]


def test_another_wheel_of_the_same_name_and_version_is_not_the_installed_one(tmp_path: Path):
    # e.g. torch 2.13.0 from the index where the wheelhouse has another build of it
    installed = make_wheel(tmp_path / "index", "probe", "1.0", "VALUE = 'index'\n")
    offered = make_wheel(tmp_path / "house", "probe", "1.0", "VALUE = 'wheelhouse'\n")
    site = tmp_path / "site"
    pip_install(installed, site)
    assert wheels_in_root([offered], [site]) == []
    assert [w["file"] for w in wheels_in_root([installed], [site])] == [installed.name]


def test_check_wheelhouse_names_a_missing_or_empty_directory_and_how_to_make_one(tmp_path):
    with pytest.raises(BuildError, match=r"wheelhouse .*nope does not exist.*pip download --no-deps"):
        check_wheelhouse([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("no wheels here")
    with pytest.raises(BuildError, match="holds no wheels"):
        check_wheelhouse([tmp_path / "empty"])
    make_wheel(tmp_path / "house", "probe", "1.0", "")
    assert check_wheelhouse([tmp_path / "house"]) == [tmp_path / "house"]


def test_staging_links_or_copies_every_wheel_and_refuses_a_name_with_two_contents(tmp_path):
    first = make_wheel(tmp_path / "a", "probe", "1.0", "VALUE = 1\n")
    make_wheel(tmp_path / "b", "other", "1.0", "")
    (tmp_path / "a" / "notes.txt").write_text("not a distribution")
    staged = stage_wheelhouse([tmp_path / "a", tmp_path / "b"], tmp_path / "stage")
    assert [p.name for p in staged] == ["other-1.0-py3-none-any.whl", first.name]
    assert (tmp_path / "stage" / first.name).read_bytes() == first.read_bytes()
    assert not (tmp_path / "stage" / "notes.txt").exists()
    make_wheel(tmp_path / "c", "probe", "1.0", "VALUE = 'something else'\n")
    with pytest.raises(BuildError, match=r"in .*a and in .*c with other contents"):
        stage_wheelhouse([tmp_path / "a", tmp_path / "c"], tmp_path / "stage2")


def test_a_private_wheel_is_copied_readable_and_the_original_keeps_its_mode(tmp_path):
    wheel = make_wheel(tmp_path / "a", "probe", "1.0", "")
    wheel.chmod(0o600)
    [staged] = stage_wheelhouse([tmp_path / "a"], tmp_path / "stage")
    assert staged.stat().st_mode & 0o777 == 0o644
    assert wheel.stat().st_mode & 0o777 == 0o600 and staged.stat().st_ino != wheel.stat().st_ino


def test_pip_options_point_at_the_staged_wheelhouse_and_turn_the_index_off_offline():
    assert pip_options(PipSources(), "/w") == {}
    assert pip_options(PipSources((Path("/h"),)), "/w") == {"find-links": "/w"}
    assert pip_options(PipSources((Path("/h"),), offline=True), "/w") == {
        "find-links": "/w", "no-index": "true"}
    assert pip_options(PipSources(offline=True), "/w") == {"no-index": "true"}


def test_sources_add_directories_once_in_order():
    sources = PipSources((Path("/a"),), offline=True).plus([Path("/b"), Path("/a")])
    assert sources == PipSources((Path("/a"), Path("/b")), offline=True)


def test_the_stage_holds_the_wheelhouse_and_pip_reads_it_first(tmp_path: Path):
    recipe = parse_recipe(REPO / "recipes" / "dacbench-base.def", {"mirror": "http://m.invalid"})
    wheel = make_wheel(tmp_path / "house", "probe", "1.0", "")
    settings = {"index-url": "https://index.invalid/simple",
                **pip_options(PipSources((tmp_path / "house",), offline=True),
                              "/" + native.WHEELHOUSE_DIR)}
    native.write_stage(recipe, tmp_path / "stage", layout.labels_for(recipe, arch="amd64"),
                       context=REPO, compressor="gzip", run_test=True, pip_settings=settings,
                       extra_env={}, wheelhouse=[tmp_path / "house"])
    staged = native.stage_wheelhouse_dir(tmp_path / "stage") / wheel.name
    assert staged.read_bytes() == wheel.read_bytes()
    # The stage is /STAGE_DIR inside the build, so the wheels are at /WHEELHOUSE_DIR there.
    inside = "/" + native.STAGE_DIR + "/" + staged.relative_to(tmp_path / "stage").as_posix()
    assert inside == f"/{native.WHEELHOUSE_DIR}/{wheel.name}"
    pip_conf = (tmp_path / "stage" / "build" / "pip.conf").read_text()
    assert f"find-links = /{native.WHEELHOUSE_DIR}" in pip_conf
    assert "no-index = true" in pip_conf


def test_a_build_with_a_wheelhouse_is_refused_before_anything_when_it_cannot_work(tmp_path):
    recipe = REPO / "recipes" / "dacbench-base.def"
    with pytest.raises(BuildError, match=r"wheelhouse .*missing does not exist"):
        build_image(recipe, tmp_path / "o.sif", wheelhouse=[tmp_path / "missing"],
                    build_args={"mirror": "http://m.invalid"})
    make_wheel(tmp_path / "house", "probe", "1.0", "")
    with pytest.raises(BuildError, match=r"needs dacbench-remote's own builder \(--builder native\)"):
        build_image(recipe, tmp_path / "o.sif", wheelhouse=[tmp_path / "house"],
                    builder="apptainer", build_args={"mirror": "http://m.invalid"})
    assert not (tmp_path / "o.sif").exists()
