"""The build manifest: the inputs digest and the package lists read from a real squashfs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dacbench_remote.images.manifest import inputs_digest, package_versions, read_packages
from dacbench_remote.images.recipe import parse_recipe_text
from tests.needs import need_tools

RECIPE = """Bootstrap: debootstrap
OSVersion: bookworm
MirrorURL: {{ mirror }}

%arguments
    flavour=plain

%files
    pkg /opt/pkg

%post
    echo {{ flavour }}
"""


def recipe(context: Path, **args: str):
    return parse_recipe_text(RECIPE, context / "r.def", {"mirror": "http://mirror.invalid/d", **args})


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "pkg" / "sub" / "run.sh").chmod(0o755)
    return tmp_path


def test_inputs_digest_names_what_the_build_copies(context: Path):
    before = inputs_digest(recipe(context), context)
    # Host bytecode and non-executable mode bits are not inputs; the build leaves them out.
    (context / "pkg" / "__pycache__").mkdir()
    (context / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"host bytecode")
    (context / "pkg" / "mod.py").chmod(0o664)
    assert inputs_digest(recipe(context), context) == before
    # Where packages come from is not an input either; which ones and what is copied are.
    assert inputs_digest(recipe(context, mirror="http://other.invalid/d"), context) == before
    assert inputs_digest(recipe(context, flavour="spicy"), context) != before
    (context / "pkg" / "mod.py").write_text("x = 2\n")
    changed = inputs_digest(recipe(context), context)
    assert changed != before
    (context / "pkg" / "sub" / "run.sh").chmod(0o644)
    assert inputs_digest(recipe(context), context) != changed


def test_packages_are_read_from_the_squashfs(tmp_path: Path):
    need_tools("mksquashfs", "unsquashfs")
    root = tmp_path / "root"
    dpkg = root / "var/lib/dpkg"
    dpkg.mkdir(parents=True)
    (dpkg / "status").write_text(
        "Package: python3\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 3.11.2-1+b1\nDescription: interactive\n high-level language\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n")
    info = root / "usr/local/lib/python3.11/dist-packages/numpy-2.4.6.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 2.4.6\n\nbody\n")
    (info / "RECORD").write_text("numpy/__init__.py,sha256=abc,12\n")
    (root / "usr/local/lib/python3.11/dist-packages/numpy").mkdir()
    squashfs = tmp_path / "fs.squashfs"
    subprocess.run(["mksquashfs", str(root), str(squashfs), "-noappend", "-quiet", "-no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    packages = read_packages(squashfs)
    assert packages["debian"] == [
        {"name": "libc6", "version": "2.36-9", "architecture": "amd64"},
        {"name": "python3", "version": "3.11.2-1+b1", "architecture": "amd64"}]
    [numpy] = packages["python"]
    assert (numpy["name"], numpy["version"]) == ("numpy", "2.4.6")
    assert numpy["location"] == "/usr/local/lib/python3.11/dist-packages"
    assert len(numpy["record_sha256"]) == 64
    manifest = {"packages": packages}
    assert package_versions(manifest, "NumPy", "gymnasium") == {"NumPy": "2.4.6"}


def test_the_packaged_catalog_is_no_input_of_an_image(tmp_path: Path):
    """The catalog pins the images' digests, so images built with it inside could never match."""
    text = RECIPE.replace("pkg /opt/pkg", "dacbench_remote /opt/dacbench-remote/dacbench_remote")
    package = tmp_path / "dacbench_remote"
    (package / "images" / "packaged" / "benchmarks").mkdir(parents=True)
    (package / "server.py").write_text("serve = True\n")
    catalog = package / "images" / "packaged" / "benchmarks" / "base.toml"
    catalog.write_text('sha256 = ""\n')
    recipe = parse_recipe_text(text, tmp_path / "r.def", {"mirror": "http://mirror.invalid/d"})
    before = inputs_digest(recipe, tmp_path)
    catalog.write_text(f'sha256 = "{"0" * 64}"\n')
    assert inputs_digest(recipe, tmp_path) == before
    (package / "server.py").write_text("serve = False\n")
    assert inputs_digest(recipe, tmp_path) != before
