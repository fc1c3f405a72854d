"""Root filesystems for the bwrap runtime: the remembered sha256 and the extraction cache."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from dacbench_remote.errors import UnpackError
from dacbench_remote.images.sif import SifImage, write_sif
from dacbench_remote.runtimes import rootfs
from dacbench_remote.runtimes.rootfs import (
    TMP_PREFIX,
    extract_rootfs,
    force_rmtree,
    image_sha256,
    sha256_file,
)
from tests.needs import need_tools


@pytest.fixture(autouse=True)
def _squashfs_tools() -> None:
    need_tools("mksquashfs", "unsquashfs")


@pytest.fixture
def image(tmp_path) -> Path:
    root = tmp_path / "src"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "marker").write_text("inside the image\n")
    (root / "ro").mkdir()
    (root / "ro" / "file").write_text("x")
    (root / "ro").chmod(0o555)
    squashfs = tmp_path / "fs.squashfs"
    subprocess.run(["mksquashfs", str(root), str(squashfs), "-quiet", "-no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    (root / "ro").chmod(0o755)
    path = tmp_path / "img.sif"
    write_sif(path, deffile=None, labels=None, squashfs_path=squashfs)
    return path


def test_sha256_is_remembered_until_the_file_changes(image, tmp_path, monkeypatch):
    calls = []
    real = rootfs.sha256_file
    monkeypatch.setattr(rootfs, "sha256_file", lambda p: calls.append(p) or real(p))
    cache = tmp_path / "cache"
    first = image_sha256(image, cache)
    second = image_sha256(image, cache)
    assert first == second == sha256_file(image)
    assert len(calls) == 1  # the second call trusted the sidecar
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert image_sha256(image, cache) == first
    assert len(calls) == 2  # a touched file is hashed again


def test_extracts_once_and_reuses(image, tmp_path):
    cache = tmp_path / "cache"
    offset = SifImage.open(image).primary_partition().offset
    first = extract_rootfs(image, offset, "d" * 64, cache)
    assert first.extracted_now and first.path == cache / ("d" * 64)
    assert (first.path / "etc" / "marker").read_text() == "inside the image\n"
    inode = first.path.stat().st_ino
    second = extract_rootfs(image, offset, "d" * 64, cache)
    assert not second.extracted_now and second.path.stat().st_ino == inode
    assert sorted(p.name for p in cache.iterdir()) == ["d" * 64, "d" * 64 + ".lock"]


def test_concurrent_extractions_extract_once(image, tmp_path):
    cache = tmp_path / "cache"
    offset = SifImage.open(image).primary_partition().offset
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        extract_rootfs(image, offset, "e" * 64, cache))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.extracted_now for r in results) == [False, False, False, True]
    assert len({r.path for r in results}) == 1


def test_leftovers_of_a_killed_extraction_are_removed(image, tmp_path):
    cache = tmp_path / "cache"
    leftover = cache / f"{TMP_PREFIX}{'f' * 64}-abc" / "rootfs" / "half"
    leftover.mkdir(parents=True)
    offset = SifImage.open(image).primary_partition().offset
    assert extract_rootfs(image, offset, "f" * 64, cache).extracted_now
    assert not leftover.parents[1].exists()


def test_failed_extraction_names_the_image_and_leaves_nothing(image, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UnpackError, match=r"unpacking .*img\.sif into .*cache failed "
                                         r"\(unsquashfs exit code \d+\)"):
        extract_rootfs(image, 12345, "a" * 64, cache)  # not where the squashfs starts
    assert sorted(p.name for p in cache.iterdir()) == ["a" * 64 + ".lock"]


def test_force_rmtree_removes_read_only_directories(tmp_path):
    tree = tmp_path / "tree"
    (tree / "locked" / "deeper").mkdir(parents=True)
    (tree / "locked" / "deeper" / "f").write_text("x")
    (tree / "locked" / "deeper").chmod(0o555)
    (tree / "locked").chmod(0o555)
    force_rmtree(tree)
    assert not tree.exists()
