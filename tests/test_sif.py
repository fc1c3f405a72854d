"""SIF reading and writing, checked against the reference tool (`siftool`, from sylabs/sif)."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from dacbench_remote.errors import BuildError, CorruptImage, ImageError, ImageNotFound
from dacbench_remote.images import sif as sif_module
from dacbench_remote.images.sif import (
    DATA_DEFFILE,
    DATA_GENERIC_JSON,
    DATA_LABELS,
    DATA_PARTITION,
    INSPECT_METADATA_NAME,
    SifImage,
    check_runnable,
    host_arch,
    inspect_metadata,
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


def test_non_squashfs_primary_partition_opens_but_cannot_run_without_apptainer(tmp_path,
                                                                               squashfs):
    image = tmp_path / "ext3.sif"
    siftool("new", str(image))
    siftool("add", str(image), str(squashfs), "--datatype", "4", "--parttype", "2",
            "--partfs", "2", "--partarch", "2")
    sif = SifImage.open(image)  # Apptainer starts ext3 partitions: opening is no refusal
    assert sif.primary_partition().fstype == 2
    with pytest.raises(CorruptImage, match="primary system partition is Ext3; only plain "
                                           "squashfs partitions can be run without Apptainer"):
        sif.squashfs_partition()


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


# --- the checks Apptainer makes before it starts an image (pkg/image/sif.go, read at 1.5.3+) ----

@pytest.fixture
def machine(monkeypatch, tmp_path):
    """Set what platform.machine() says; binfmt_misc is an empty (enabled) directory."""
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")
    monkeypatch.setattr(sif_module, "BINFMT_MISC", binfmt)

    def set_machine(name: str) -> Path:
        monkeypatch.setattr(sif_module.platform, "machine", lambda: name)
        return binfmt
    return set_machine


@pytest.mark.parametrize(("uname", "goarch", "code"), [
    ("x86_64", "amd64", b"02"), ("aarch64", "arm64", b"04"), ("ppc64le", "ppc64le", b"06"),
    ("s390x", "s390x", b"11"), ("riscv64", "riscv64", b"12"), ("loongarch64", "loong64", b"13"),
])
def test_the_host_arch_gets_the_sif_librarys_arch_code(machine, tmp_path, squashfs, uname,
                                                       goarch, code):
    # Codes from apptainer/sif pkg/sif/arch.go (hdrArchAMD64 "02", hdrArchARM64 "04", ...).
    machine(uname)
    assert host_arch() == goarch
    image = tmp_path / "host.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=squashfs, arch=host_arch())
    raw = image.read_bytes()
    assert raw[45:48] == code + b"\x00"  # the header's arch, after launch(32)+magic(10)+version(3)
    partition = SifImage.open(image).primary_partition()
    assert partition.arch == goarch
    check_runnable(SifImage.open(image))  # Apptainer on this host would start it


def test_siftool_reads_arm64_as_what_we_wrote(machine, tmp_path, squashfs):
    machine("aarch64")
    image = tmp_path / "arm.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=squashfs, arch=host_arch())
    # siftool is the sif library's own reader: both the header and the partition say arm64.
    assert siftool_fields("header", str(image))["Primary Architecture"] == "arm64"
    assert siftool_fields("info", "2", str(image))["Architecture"] == "arm64"
    assert siftool_list(image)[-1]["type"] == "FS (Squashfs/*System/arm64)"


def test_an_image_of_another_arch_is_refused_as_apptainer_refuses_it(machine, tmp_path,
                                                                      squashfs):
    machine("aarch64")
    image = tmp_path / "amd.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=squashfs, arch="amd64")
    with pytest.raises(ImageError, match=r"the image's architecture \(amd64\) could not run on "
                                         r"the host's \(arm64\)"):
        check_runnable(SifImage.open(image))


def test_an_emulated_arch_runs_as_apptainer_lets_it(machine, tmp_path, squashfs):
    binfmt = machine("x86_64")
    image = tmp_path / "arm.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=squashfs, arch="arm64")
    # A qemu-user entry as binfmt_misc shows it; the magic is machine.go's arm64 ElfMagic.
    entry = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\n"
             "offset 0\nmagic 7f454c460201010000000000000000000200b700\n"
             "mask ffffffffffffff00fffffffffffffffffeffffff\n")
    (binfmt / "qemu-aarch64").write_text(entry.format(flags="POC"))
    with pytest.raises(ImageError, match="could not run"):  # without F, Apptainer refuses
        check_runnable(SifImage.open(image))
    (binfmt / "qemu-aarch64").write_text(entry.format(flags="POCF"))
    check_runnable(SifImage.open(image))


@pytest.mark.parametrize(("arch", "host"), [("386", "x86_64"), ("arm", "aarch64")])
def test_compatible_arches_run_natively(machine, tmp_path, squashfs, arch, host):
    machine(host)
    image = tmp_path / "compat.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=squashfs, arch=arch)
    check_runnable(SifImage.open(image))


def test_unknown_arch_code_passes(machine, tmp_path, squashfs):
    machine("aarch64")
    image = tmp_path / "unknown.sif"
    write_sif(image, deffile=None, labels=None, squashfs_path=squashfs, arch="amd64")
    raw = image.read_bytes()  # siftool refuses arch 0: set the partition's code to "00" by hand
    extra = struct.pack("<ii3s", 1, 2, b"02\x00")  # squashfs, primary, amd64
    assert raw.count(extra) == 1
    image.write_bytes(raw.replace(extra, struct.pack("<ii3s", 1, 2, b"00\x00")))
    assert SifImage.open(image).primary_partition().arch == "unknown"
    check_runnable(SifImage.open(image))


def _partition_image(tmp_path: Path, content: Path, fstype: int) -> SifImage:
    image = tmp_path / f"fs{fstype}.sif"
    siftool("new", str(image))
    siftool("add", str(image), str(content), "--datatype", "4", "--parttype", "2",
            "--partfs", str(fstype), "--partarch", "2")
    return SifImage.open(image)


@pytest.mark.parametrize("fstype", [4, 5, 6])  # raw, encrypted squashfs, gocryptfs squashfs
def test_filesystems_apptainer_starts_pass_unchecked(machine, tmp_path, fstype):
    machine("x86_64")
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00" * 8192)  # Apptainer reads no header for these
    check_runnable(_partition_image(tmp_path, blob, fstype))


def test_ext3_needs_its_superblock_magic(machine, tmp_path):
    machine("x86_64")
    blob = tmp_path / "ext3"
    data = bytearray(8192)
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="claims ext3 but has no ext3 superblock"):
        check_runnable(_partition_image(tmp_path, blob, 2))
    data[1080:1082] = b"\x53\xef"
    blob.write_bytes(bytes(data))
    (tmp_path / "fs2.sif").unlink()
    check_runnable(_partition_image(tmp_path, blob, 2))


def test_squashfs_without_its_magic_and_unknown_filesystems_are_refused(machine, tmp_path):
    machine("x86_64")
    blob = tmp_path / "blob"
    blob.write_bytes(b"not squashfs" * 100)
    with pytest.raises(ImageError, match="claims squashfs but has no squashfs header"):
        check_runnable(_partition_image(tmp_path, blob, 1))
    with pytest.raises(ImageError, match="unknown filesystem type 3"):
        check_runnable(_partition_image(tmp_path, blob, 3))


def test_inspect_metadata_is_go_json_of_apptainers_metadata_struct():
    # pkg/inspect/metadata.go: {"data":{"attributes":{...}},"type":"container"}, fields in
    # struct order, omitempty, maps sorted; encoding/json escapes <, > and & in strings.
    attributes = {"startscript": "#!/bin/sh", "labels": {"z": "1", "a": "x<y>&"},
                  "deffile": "Bootstrap: x", "environment": {"/e/91": "B", "/e/90": "A"},
                  "runscript": "#!/bin/sh\n\nexec x", "test": "", "helpfile": "Help."}
    assert inspect_metadata(attributes) == (
        b'{"data":{"attributes":{"environment":{"/e/90":"A","/e/91":"B"},'
        b'"labels":{"a":"x\\u003cy\\u003e\\u0026","z":"1"},"runscript":"#!/bin/sh\\n\\nexec x",'
        b'"helpfile":"Help.","deffile":"Bootstrap: x","startscript":"#!/bin/sh"}},'
        b'"type":"container"}')
    with pytest.raises(ValueError, match="not Apptainer inspect attributes: runscripts"):
        inspect_metadata({"runscripts": "typo"})
