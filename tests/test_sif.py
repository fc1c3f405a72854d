"""SIF reading and writing, checked against the reference tool (`siftool`, from sylabs/sif)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from dacbench_remote.errors import BuildError, CorruptImage, ImageNotFound
from dacbench_remote.images.sif import (
    DATA_DEFFILE,
    DATA_GENERIC_JSON,
    DATA_LABELS,
    DATA_PARTITION,
    INSPECT_METADATA_NAME,
    SifImage,
    write_sif,
)
from tests.needs import need_tools


@pytest.fixture(autouse=True)
def _sif_tools() -> None:
    need_tools("siftool", "mksquashfs")


DEFFILE = b"Bootstrap: debootstrap\nOSVersion: bookworm\n\n%runscript\n    exec true\n"


def siftool(*args: str) -> str:
    return subprocess.run(["siftool", *args], check=True, capture_output=True, text=True).stdout


def siftool_list(path: Path) -> list[dict]:
    """Rows of `siftool list`: id, group, link, start, end, type."""
    rows = []
    for line in siftool("list", str(path)).splitlines():
        match = re.match(r"(\d+)\s*\|(\S+)\s*\|(\S+)\s*\|(\d+)-(\d+)\s*\|(.+)$", line)
        if match:
            obj_id, group, link, start, end, kind = match.groups()
            rows.append({"id": int(obj_id), "group": group, "link": link, "start": int(start),
                         "end": int(end), "type": kind.strip()})
    return rows


def siftool_fields(*args: str) -> dict[str, str]:
    fields = {}
    for line in siftool(*args).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


@pytest.fixture(scope="module")
def squashfs(tmp_path_factory) -> Path:
    """A tiny real squashfs with one known file."""
    directory = tmp_path_factory.mktemp("squash")
    (directory / "root" / "etc").mkdir(parents=True)
    (directory / "root" / "etc" / "hello").write_text("hello from the partition\n")
    out = directory / "fs.squashfs"
    subprocess.run(["mksquashfs", str(directory / "root"), str(out), "-noappend", "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="module")
def siftool_image(tmp_path_factory, squashfs) -> Path:
    """A SIF assembled by siftool the way ARCHITECTURE.md describes."""
    directory = tmp_path_factory.mktemp("siftool")
    image = directory / "img.sif"
    (directory / "recipe.def").write_bytes(DEFFILE)
    (directory / "labels.json").write_text(json.dumps({"maintainer": "tests", "version": "1"}))
    siftool("new", str(image))
    siftool("add", str(image), str(directory / "recipe.def"), "--datatype", "1")
    siftool("add", str(image), str(directory / "labels.json"), "--datatype", "3")
    siftool("add", str(image), str(squashfs), "--datatype", "4", "--parttype", "2",
            "--partfs", "1", "--partarch", "2", "--groupid", "1")
    return image


def test_reads_what_siftool_lists(siftool_image):
    image = SifImage.open(siftool_image)
    rows = siftool_list(siftool_image)
    assert len(rows) == len(image.descriptors) == 3
    for row, descriptor in zip(rows, image.descriptors, strict=True):
        assert row["id"] == descriptor.id
        assert row["group"] == (str(descriptor.group_id) if descriptor.group_id else "NONE")
        assert (row["start"], row["end"]) == (descriptor.offset,
                                              descriptor.offset + descriptor.size)
        assert row["type"].split(" ")[0] == descriptor.kind
    partition = image.primary_partition()
    assert rows[2]["type"] == "FS (Squashfs/*System/amd64)"
    assert (partition.fstype, partition.parttype, partition.arch) == (1, 2, "amd64")


def test_reads_the_header_siftool_shows(siftool_image):
    image = SifImage.open(siftool_image)
    header = siftool_fields("header", str(siftool_image))
    assert image.version == header["Version"] == "01"
    assert image.arch == header["Primary Architecture"] == "amd64"
    assert image.id == uuid.UUID(header["ID"])
    assert image.header.descriptors_free == int(header["Descriptors Free"])
    assert image.header.descriptors_total == int(header["Descriptors Total"])
    assert image.header.descriptors_offset == int(header["Descriptors Offset"])
    assert image.header.data_offset == int(header["Data Offset"])


def test_reads_deffile_labels_and_objects(siftool_image, squashfs):
    image = SifImage.open(siftool_image)
    assert image.deffile() == DEFFILE.decode()
    assert image.labels() == {"maintainer": "tests", "version": "1"}
    partition = image.primary_partition()
    assert image.read_object(partition) == squashfs.read_bytes()
    assert [d.datatype for d in image.descriptors] == [DATA_DEFFILE, DATA_LABELS, DATA_PARTITION]


def test_written_image_has_the_objects_apptainer_writes(tmp_path, squashfs):
    out = tmp_path / "built.sif"
    digest = write_sif(out, deffile=DEFFILE, labels={"b": "2", "a": "1"}, squashfs_path=squashfs,
                       created=1_700_000_000)
    rows = siftool_list(out)
    assert [row["type"] for row in rows] == ["Def.FILE", "JSON.Generic",
                                             "FS (Squashfs/*System/amd64)"]
    assert [row["group"] for row in rows] == ["1", "1", "1"]
    assert all(row["start"] % 4096 == 0 for row in rows)
    header = siftool_fields("header", str(out))
    assert header["Launch Script"] == "#!/usr/bin/env run-singularity"
    assert header["Primary Architecture"] == "amd64"
    assert header["Descriptors Total"] == "48" and header["Descriptors Free"] == "45"
    assert siftool_fields("info", "2", str(out))["Name"] == INSPECT_METADATA_NAME
    metadata = json.loads(siftool("dump", "2", str(out)))
    assert metadata == {"data": {"attributes": {"labels": {"a": "1", "b": "2"},
                                                "deffile": DEFFILE.decode()}},
                        "type": "container"}
    assert siftool("dump", "1", str(out)).encode() == DEFFILE
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()


def test_written_image_reads_back_and_unsquashfs_unpacks_it(tmp_path, squashfs):
    out = tmp_path / "built.sif"
    write_sif(out, deffile=None, labels={"k": "v"}, squashfs_path=squashfs, arch="arm64")
    image = SifImage.open(out)
    assert image.arch == "arm64"
    assert image.deffile() is None
    assert image.labels() == {"k": "v"}
    assert [d.datatype for d in image.descriptors] == [DATA_GENERIC_JSON, DATA_PARTITION]
    assert siftool_list(out)[-1]["type"] == "FS (Squashfs/*System/arm64)"
    partition = image.primary_partition()
    subprocess.run(["unsquashfs", "-quiet", "-no-progress", "-offset", str(partition.offset),
                    "-dest", str(tmp_path / "rootfs"), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    assert (tmp_path / "rootfs" / "etc" / "hello").read_text() == "hello from the partition\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built.sif", "rootfs"]


def test_write_refuses_a_non_squashfs_and_leaves_nothing(tmp_path):
    bogus = tmp_path / "rootfs.tar"
    bogus.write_bytes(b"not a filesystem" * 100)
    with pytest.raises(BuildError, match=r"rootfs\.tar is not a squashfs filesystem"):
        write_sif(tmp_path / "out.sif", deffile=DEFFILE, labels=None, squashfs_path=bogus)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rootfs.tar"]


def test_write_refuses_an_unknown_architecture(tmp_path, squashfs):
    with pytest.raises(ValueError, match="unknown architecture 'x86'"):
        write_sif(tmp_path / "out.sif", deffile=None, labels=None, squashfs_path=squashfs,
                  arch="x86")


def test_missing_file_is_image_not_found(tmp_path):
    with pytest.raises(ImageNotFound, match=r"nothing\.sif does not exist"):
        SifImage.open(tmp_path / "nothing.sif")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", r"truncated, the file has 0 bytes"),
        (b"#!/bin/sh\n" + b"x" * 300, r"bad magic \(no SIF_MAGIC at byte 32\)"),
        (b"<html>502 Bad Gateway</html>" * 20, r"bad magic"),
    ],
    ids=["empty", "shell-script", "html-error-page"],
)
def test_non_sif_files_are_corrupt_images(tmp_path, content, problem):
    path = tmp_path / "image.sif"
    path.write_bytes(content)
    with pytest.raises(CorruptImage, match=rf"image\.sif is not a SIF image: {problem}"):
        SifImage.open(path)


def test_truncated_download_names_the_cut_object(tmp_path, siftool_image):
    data = siftool_image.read_bytes()
    cut = tmp_path / "partial.sif"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptImage, match=r"partial\.sif .*truncated, object 3 \(FS\) ends at "
                                           rf"byte {len(data)} but the file has {len(data) - 100}"):
        SifImage.open(cut)


def test_cut_inside_the_descriptor_table_is_truncated(tmp_path, siftool_image):
    cut = tmp_path / "header-only.sif"
    cut.write_bytes(siftool_image.read_bytes()[:5000])
    with pytest.raises(CorruptImage, match=r"header-only\.sif .*descriptor table ends at byte"):
        SifImage.open(cut)


def test_image_without_system_partition(tmp_path):
    image = tmp_path / "nopart.sif"
    (tmp_path / "recipe.def").write_bytes(DEFFILE)
    siftool("new", str(image))
    siftool("add", str(image), str(tmp_path / "recipe.def"), "--datatype", "1")
    with pytest.raises(CorruptImage, match=r"nopart\.sif is a SIF image without a primary system "
                                           r"partition \(nothing to run\); it holds: Def\.FILE"):
        SifImage.open(image)
    readable = SifImage.open(image, require_system_partition=False)
    assert readable.deffile() == DEFFILE.decode()


def test_labels_that_are_not_json_name_the_object(tmp_path, squashfs):
    image = tmp_path / "badlabels.sif"
    (tmp_path / "labels.json").write_text("{not json")
    siftool("new", str(image))
    siftool("add", str(image), str(tmp_path / "labels.json"), "--datatype", "3")
    siftool("add", str(image), str(squashfs), "--datatype", "4", "--parttype", "2",
            "--partfs", "1", "--partarch", "2")
    with pytest.raises(CorruptImage, match=r"object 1 \(JSON\.Labels\) is not valid JSON"):
        SifImage.open(image).labels()


def test_non_squashfs_primary_partition_cannot_run(tmp_path, squashfs):
    image = tmp_path / "ext3.sif"
    siftool("new", str(image))
    siftool("add", str(image), str(squashfs), "--datatype", "4", "--parttype", "2",
            "--partfs", "2", "--partarch", "2")
    with pytest.raises(CorruptImage, match="primary system partition is Ext3, only squashfs"):
        SifImage.open(image)


def test_the_same_inputs_write_the_same_bytes(tmp_path, squashfs):
    """No clock and no random id: two writes of the same content are the same file."""
    options = dict(deffile=DEFFILE, labels={"a": "1"}, squashfs_path=squashfs, created=1_700_000_000,
                   json_objects={"manifest.json": b'{"x": 1}'})
    first = write_sif(tmp_path / "one.sif", **options)
    second = write_sif(tmp_path / "two.sif", **options)
    assert first == second
    image = SifImage.open(tmp_path / "one.sif")
    assert image.created == image.modified == 1_700_000_000
    assert image.id.version == 5  # derived from the content
    assert image.json_object("manifest.json") == {"x": 1}
    assert siftool_fields("info", "3", str(tmp_path / "one.sif"))["Name"] == "manifest.json"
    other = write_sif(tmp_path / "three.sif", **{**options, "json_objects": {"manifest.json": b"{}"}})
    assert other != first
    assert SifImage.open(tmp_path / "three.sif").id != image.id


def test_created_defaults_to_source_date_epoch(tmp_path, squashfs, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    write_sif(tmp_path / "dated.sif", deffile=None, labels=None, squashfs_path=squashfs)
    assert SifImage.open(tmp_path / "dated.sif").created == 1_600_000_000
