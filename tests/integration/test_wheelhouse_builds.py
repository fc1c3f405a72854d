"""Builds from a wheelhouse, for real: pip inside %post installs from it (offline: only from it),
the image's manifest records the wheels it holds by sha256, and two builds from the same wheels
are one image, byte for byte. A small recipe keeps this fast; the agent image's build from the
test wheelhouse is checked in test_agent_images.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dacbench_remote._sys.files import sha256_file
from dacbench_remote.errors import BuildError
from dacbench_remote.images import native
from dacbench_remote.images.build import build_image
from dacbench_remote.images.manifest import MANIFEST_NAME, package_versions
from dacbench_remote.images.sif import SifImage
from tests.conftest import IMAGE_TIMEOUT
from tests.needs import need_root, need_tools

pytestmark = [pytest.mark.integration, pytest.mark.timeout(IMAGE_TIMEOUT)]  # builds images

PINS = ["serpent==1.43", "Pyro5==5.17"]
RECIPE = f"""\
Bootstrap: debootstrap
OSVersion: bookworm
MirrorURL: {{{{ mirror }}}}
Include: python3,python3-pip-whl

%post
    set -eu
    pip_wheel=$(ls /usr/share/python-wheels/pip-*.whl)
    python3 "$pip_wheel/pip" install --no-cache-dir --no-deps --only-binary=:all: \\
        --break-system-packages --root-user-action=ignore --disable-pip-version-check \\
        {" ".join(PINS)}

%test
    python3 -c "import Pyro5, serpent; print('Pyro5', Pyro5.__version__)"
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """The two wheels, as a user makes a wheelhouse: `pip download --no-deps`."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "--no-deps", "--only-binary=:all:", "-d", str(directory), *PINS], check=True)
    assert len(list(directory.glob("*.whl"))) == 2
    return directory


def _build(tmp_path: Path, name: str, wheelhouse: Path, *, offline: bool,
           workdir: Path = Path("/var/tmp")):
    need_tools(*native.missing_tools())
    need_root("building images with the native builder (mmdebstrap as root)")
    recipe = tmp_path / "wheels.def"
    recipe.write_text(RECIPE)
    messages: list[str] = []
    result = build_image(recipe, tmp_path / name, context=tmp_path, builder="native",
                         workdir=workdir, wheelhouse=[wheelhouse], offline=offline,
                         progress=messages.append)
    return result, messages


def test_two_builds_from_one_wheelhouse_give_one_image_that_records_its_wheels(
        wheelhouse: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    offline, messages = _build(tmp_path, "offline.sif", wheelhouse, offline=True)
    assert any("no index (offline)" in m for m in messages)
    assert any("Pyro5 5.17" in m for m in messages)  # %test ran the installed package
    # The same wheels elsewhere (another directory), with the index reachable as a fallback.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(wheelhouse, elsewhere)
    online, _ = _build(tmp_path, "online.sif", elsewhere, offline=False)
    assert online.sha256 == offline.sha256 == sha256_file(tmp_path / "offline.sif")

    manifest = SifImage.open(tmp_path / "online.sif").json_object(MANIFEST_NAME)
    assert manifest["wheelhouse"] == sorted(
        ({"file": wheel.name, "sha256": sha256_file(wheel)} for wheel in wheelhouse.iterdir()),
        key=lambda entry: entry["file"])
    assert package_versions(manifest, "Pyro5", "serpent") == {"Pyro5": "5.17", "serpent": "1.43"}
    assert SifImage.open(tmp_path / "online.sif").created == 1700000000


def test_an_offline_build_missing_a_wheel_fails_naming_it_and_leaves_nothing(
        wheelhouse: Path, tmp_path: Path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for wheel in wheelhouse.glob("serpent-*.whl"):
        shutil.copy(wheel, partial)
    with pytest.raises(BuildError) as info:
        _build(tmp_path, "never.sif", partial, offline=True, workdir=tmp_path / "work")
    message = str(info.value)
    assert "image build failed in phase 'post'" in message
    assert "No matching distribution found for Pyro5==5.17" in message
    assert f"offline, pip in %post looked only in the wheelhouse ({partial}), which lacks it" \
        in message
    assert "pip download --no-deps" in message
    assert not (tmp_path / "never.sif").exists()
    assert list((tmp_path / "work").iterdir()) == []  # the build's directory went with it
