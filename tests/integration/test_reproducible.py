"""Reproducible images, for real: the base recipe built twice gives the same file, a catalog pin
is honoured only by a build that reproduces it, and `build --verify` names what differs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacbench_remote._sys.files import sha256_file
from dacbench_remote.images.layout import build_date
from dacbench_remote.images.manifest import MANIFEST_NAME, package_versions
from dacbench_remote.images.sif import SifImage
from tests.conftest import IMAGE_TIMEOUT

from .conftest import BASE_RECIPE, REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(IMAGE_TIMEOUT)]  # builds images

ALTERED_LINE = "    echo 'an altered recipe' > /opt/dacbench-remote/ALTERED\n"


def _catalog(directory: Path, *, family: str, benchmark: str, recipe: Path, sha256: str,
             inputs: str, sources: list[str]) -> Path:
    """A user catalog directory pinning one version of `recipe` to `sha256`."""
    (directory / "benchmarks").mkdir(parents=True)
    (directory / "benchmarks" / f"{family}.toml").write_text(
        f'family = "{family}"\nrecipe = "{recipe}"\nbenchmarks = ["{benchmark}"]\n\n'
        f'[[versions]]\nexperiment = "exp:repro"\nimage = "{family}-repro.sif"\n'
        f'sha256 = "{sha256}"\ninputs = "{inputs}"\nsources = {json.dumps(sources)}\n'
        'default = true\ndacbench = "0.5.6"\n')
    return directory / "benchmarks"


def _manifest(image: Path) -> dict:
    manifest = SifImage.open(image).json_object(MANIFEST_NAME)
    assert manifest is not None, f"{image} carries no build manifest"
    return manifest


def test_the_base_image_records_its_inputs_inside(base_image_info: dict):
    image = Path(base_image_info["path"])
    manifest = _manifest(image)
    versions = package_versions(manifest, "dacbench", "numpy", "gymnasium")
    assert versions == {"dacbench": "0.5.6", "numpy": "2.4.6", "gymnasium": "1.4.0"}
    debian = {p["name"]: p["version"] for p in manifest["packages"]["debian"]}
    assert {"python3", "libstdc++6", "python3-pip-whl"} <= set(debian)
    python = {p["name"]: p for p in manifest["packages"]["python"]}
    assert len(python["Pyro5"]["record_sha256"]) == 64
    assert manifest["recipe_sha256"] == sha256_file(BASE_RECIPE)
    # One epoch dates everything: the SIF header, the build-date label and the manifest.
    sif = SifImage.open(image)
    assert sif.created == manifest["source_date_epoch"]
    assert sif.labels()["org.label-schema.build-date"] == build_date(sif.created)
    shown = subprocess.run([sys.executable, "-m", "dacbench_remote", "inspect", str(image)],
                           capture_output=True, text=True, check=True).stdout
    assert "versions   dacbench 0.5.6  numpy 2.4.6  gymnasium 1.4.0" in shown
    assert f"inputs     {manifest['inputs_sha256']}" in shown


def test_verify_lists_what_an_altered_recipe_changes(base_image_info: dict, tmp_path: Path):
    lines = BASE_RECIPE.read_text().splitlines(keepends=True)
    post = lines.index("%post\n")
    altered = tmp_path / "dacbench-base-altered.def"
    altered.write_text("".join([*lines[:post + 2], ALTERED_LINE, *lines[post + 2:]]))
    first = Path(base_image_info["path"])
    catalog_dir = _catalog(tmp_path / "catalog", family="repro-altered",
                           benchmark="AlteredBase", recipe=altered,
                           sha256=base_image_info["sha256"],
                           inputs=_manifest(first)["inputs_sha256"], sources=[str(first)])
    env = {**os.environ, "DACBENCH_REMOTE_CATALOG": str(catalog_dir),
           "DACBENCH_REMOTE_CACHE": str(tmp_path / "cache"), "TMPDIR": "/var/tmp"}
    result = subprocess.run(
        [sys.executable, "-m", "dacbench_remote", "build", "--verify", "AlteredBase@exp:repro"],
        capture_output=True, text=True, env=env, cwd=REPO)
    print(result.stdout)
    assert result.returncode == 1, result.stderr[-2000:]
    out = result.stdout
    assert f"NOT reproduced: AlteredBase exp:repro rebuilt from {altered.name}" in out
    assert f"pins {base_image_info['sha256']}" in out
    assert "inputs: NOT the same as the pin's" in out
    # The one file the alteration adds is named, with its size and digest.
    added = [line for line in out.splitlines() if "/opt/dacbench-remote/ALTERED" in line]
    assert len(added) == 1 and "only in the rebuilt image" in added[0], out
    assert "18 B sha256" in added[0]
    # The recipe is kept in the image (Def.FILE, Apptainer's metadata, /.singularity.d) and
    # in the manifest: those differ too.
    for name in ("Def.FILE", "JSON.Generic inspect-metadata.json", f"JSON.Generic {MANIFEST_NAME}"):
        assert f"object  {name}: differs" in out
    assert "file    /.singularity.d/Singularity: content, size" in out
    # Nothing else changed: the rest of the root filesystem was rebuilt identically.
    assert "differences (2 files):" in out

