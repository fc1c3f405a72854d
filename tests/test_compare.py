"""Comparing two real (small) images file by file, and `build --verify` on top of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dacbench_remote._sys.files import sha256_file
from dacbench_remote.errors import BadConfig
from dacbench_remote.images.compare import compare_images, describe
from dacbench_remote.images.manifest import MANIFEST_NAME, manifest_bytes
from dacbench_remote.images.sif import write_sif
from dacbench_remote.images.verify import report_lines, verify_version
from tests.needs import need_tools


def image(directory: Path, name: str, files: dict[str, str], *, numpy: str = "2.4.6") -> Path:
    """A real SIF whose root filesystem holds `files` and whose manifest names one package."""
    need_tools("mksquashfs", "unsquashfs")
    root = directory / f"{name}.root"
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    squashfs = directory / f"{name}.squashfs"
    subprocess.run(["mksquashfs", str(root), str(squashfs), "-noappend", "-quiet", "-no-progress",
                    "-all-time", "1700000000"], check=True, stdout=subprocess.DEVNULL)
    manifest = {"inputs_sha256": "1" * 64, "packages": {
        "debian": [], "python": [{"name": "numpy", "version": numpy}]}}
    out = directory / f"{name}.sif"
    write_sif(out, deffile=b"Bootstrap: debootstrap\n", labels={}, squashfs_path=squashfs,
              created=1_700_000_000, json_objects={MANIFEST_NAME: manifest_bytes(manifest)})
    return out


def test_identical_images_have_no_differences(tmp_path: Path):
    files = {"etc/a": "same\n", "opt/b": "also\n"}
    assert compare_images(image(tmp_path, "one", files), image(tmp_path, "two", files)).identical


def test_differences_name_files_packages_and_objects(tmp_path: Path):
    left = image(tmp_path, "left", {"etc/a": "same\n", "opt/changed": "old\n", "opt/gone": "x\n"})
    right = image(tmp_path, "right", {"etc/a": "same\n", "opt/changed": "newer\n",
                                      "opt/new": "y\n"}, numpy="1.26.4")
    difference = compare_images(left, right)
    assert [(d.path, d.what) for d in difference.files] == [
        ("/opt/changed", "content, size"), ("/opt/gone", "only in the pinned image"),
        ("/opt/new", "only in the rebuilt image")]
    assert difference.packages == ["python numpy: 2.4.6 -> 1.26.4"]
    assert difference.objects == [f"JSON.Generic {MANIFEST_NAME}: differs"]
    lines = describe(difference)
    assert any(line.startswith("  file    /opt/changed: content, size (4 B sha256") and
               "-> 6 B sha256" in line for line in lines)


def probe_catalog(tmp_path: Path, monkeypatch, *, published: bool) -> tuple[Path, Path]:
    """A user catalog pinning a small real image (its source the local file if `published`);
    returns the pinned image and the recipe."""
    pinned = image(tmp_path, "pinned", {"etc/a": "pinned\n"})
    recipe = tmp_path / "probe.def"
    recipe.write_text("Bootstrap: debootstrap\n")
    sources = f'["{pinned}"]' if published else "[]"
    (tmp_path / "catalog" / "benchmarks").mkdir(parents=True)
    (tmp_path / "catalog" / "benchmarks" / "probe.toml").write_text(
        f'family = "probe"\nrecipe = "{recipe}"\nbenchmarks = ["Probe"]\n[[versions]]\n'
        f'experiment = "exp:1"\nimage = "probe-1.sif"\nsha256 = "{sha256_file(pinned)}"\n'
        f'inputs = "{"1" * 64}"\nsources = {sources}\ndefault = true\n')
    monkeypatch.setenv("DACBENCH_REMOTE_CATALOG", str(tmp_path / "catalog" / "benchmarks"))
    monkeypatch.setenv("DACBENCH_REMOTE_CACHE", str(tmp_path / "cache"))
    return pinned, recipe


@pytest.fixture
def pinned_catalog(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A user catalog pinning a small real image, published as a local file."""
    return probe_catalog(tmp_path, monkeypatch, published=True)


def test_verify_reports_a_reproduced_pin(pinned_catalog):
    pinned, recipe = pinned_catalog
    built = []

    def rebuild(source: Path, output: Path, sources) -> str:
        built.append(source)
        shutil.copyfile(pinned, output)
        return sha256_file(output)

    result = verify_version("Probe", "exp:1", build=rebuild)
    assert built == [recipe] and result.reproduced
    assert report_lines(result)[0].startswith("reproduced: Probe exp:1 rebuilt from probe.def")


def test_verify_lists_the_differences_of_a_rebuild(pinned_catalog, tmp_path: Path):
    def rebuild(source: Path, output: Path, sources) -> str:
        other = image(tmp_path, "other", {"etc/a": "rebuilt\n"})
        shutil.copyfile(other, output)
        return sha256_file(output)

    result = verify_version("Probe", None, build=rebuild)
    assert not result.reproduced
    text = "\n".join(report_lines(result))
    assert "NOT reproduced: Probe exp:1" in text
    assert "inputs: the same as the pin's" in text and "package mirrors" in text
    assert "differences (1 file):" in text and "/etc/a: content" in text


def test_verify_needs_a_pin(tmp_path: Path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    recipe = tmp_path / "r.def"
    recipe.write_text("Bootstrap: debootstrap\n")
    (tmp_path / "benchmarks" / "u.toml").write_text(
        f'family = "u"\nrecipe = "{recipe}"\nbenchmarks = ["Unpinned"]\n[[versions]]\n'
        'experiment = "exp:1"\nimage = "u-1.sif"\nsha256 = ""\ndefault = true\n')
    monkeypatch.setenv("DACBENCH_REMOTE_CATALOG", str(tmp_path / "benchmarks"))
    with pytest.raises(BadConfig, match=r"pins no sha256 .* nothing to verify against"):
        verify_version("Unpinned", None, build=lambda recipe, output, sources: "")


@pytest.fixture
def unpublished_pin(tmp_path: Path, monkeypatch) -> Path:
    """A catalog version pinned to a small image that has no sources (as the packaged ones)."""
    return probe_catalog(tmp_path, monkeypatch, published=False)[0]


def _altered_rebuild(tmp_path: Path):
    def rebuild(source: Path, output: Path, sources) -> str:
        shutil.copyfile(image(tmp_path, "other", {"etc/a": "rebuilt\n"}), output)
        return sha256_file(output)
    return rebuild


def test_verify_without_the_pinned_image_says_how_to_list_the_files(unpublished_pin,
                                                                      tmp_path: Path):
    result = verify_version("Probe", None, build=_altered_rebuild(tmp_path))
    text = "\n".join(report_lines(result))
    assert "NOT reproduced" in text and "could not be fetched to compare files" in text
    assert "--against PINNED.sif" in text and "/etc/a" not in text


def test_verify_against_a_copy_of_the_pinned_image_lists_the_files(unpublished_pin,
                                                                    tmp_path: Path):
    result = verify_version("Probe", None, build=_altered_rebuild(tmp_path),
                            against=unpublished_pin)
    text = "\n".join(report_lines(result))
    assert "differences (1 file):" in text and "/etc/a: content" in text
    impostor = image(tmp_path, "impostor", {"etc/a": "impostor\n"})
    with pytest.raises(BadConfig, match=r"impostor.sif is not the pinned image of Probe exp:1"):
        verify_version("Probe", None, build=_altered_rebuild(tmp_path), against=impostor)


def test_cli_against_needs_verify(capsys):
    from dacbench_remote.cli import main

    assert main(["build", "--against", "x.sif"]) != 0
    assert "--against goes with --verify" in capsys.readouterr().err
