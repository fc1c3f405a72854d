"""Read and write Singularity Image Format (SIF) files in pure Python, laid out as Apptainer does.

The layout follows the SIF 01 spec as implemented by github.com/sylabs/sif (v2): a 128-byte global
header, a table of fixed-size (585-byte) object descriptors at byte 4096, then the data objects,
each aligned to 4096 bytes. All integers are little-endian.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .._sys.files import atomic_output
from ..errors import BuildError, CorruptImage, ImageNotFound, UnrunnableImage

# --- constants from the SIF spec (sylabs/sif pkg/sif/sif.go) -----------------------------------

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
MAGIC = b"SIF_MAGIC\x00"
SPEC_VERSION = b"01\x00"

DATA_DEFFILE = 0x4001
DATA_ENVVAR = 0x4002
DATA_LABELS = 0x4003
DATA_PARTITION = 0x4004
DATA_SIGNATURE = 0x4005
DATA_GENERIC_JSON = 0x4006
DATA_GENERIC = 0x4007
DATA_CRYPTO_MESSAGE = 0x4008
DATA_SBOM = 0x4009
DATA_OCI_ROOT_INDEX = 0x400A
DATA_OCI_BLOB = 0x400B

# Names as `siftool list` prints them.
DATATYPE_NAMES = {
    DATA_DEFFILE: "Def.FILE",
    DATA_ENVVAR: "Env.Vars",
    DATA_LABELS: "JSON.Labels",
    DATA_PARTITION: "FS",
    DATA_SIGNATURE: "Signature",
    DATA_GENERIC_JSON: "JSON.Generic",
    DATA_GENERIC: "Generic/Raw",
    DATA_CRYPTO_MESSAGE: "Cryptographic Message",
    DATA_SBOM: "SBOM",
    DATA_OCI_ROOT_INDEX: "OCI.RootIndex",
    DATA_OCI_BLOB: "OCI.Blob",
}

FS_SQUASH, FS_EXT3, FS_IMMUOBJ, FS_RAW, FS_ENCRYPTED_SQUASH, FS_GOCRYPTFS_SQUASH = 1, 2, 3, 4, 5, 6
FSTYPE_NAMES = {1: "Squashfs", 2: "Ext3", 3: "Archive", 4: "Raw", 5: "Encrypted squashfs",
                6: "Gocryptfs squashfs"}
# The primary partitions Apptainer can start (checkPartitionType in pkg/image/sif.go).
APPTAINER_FSTYPES = (FS_SQUASH, FS_EXT3, FS_ENCRYPTED_SQUASH, FS_RAW, FS_GOCRYPTFS_SQUASH)
PART_SYSTEM, PART_PRIMSYS, PART_DATA, PART_OVERLAY = 1, 2, 3, 4
PARTTYPE_NAMES = {1: "System", 2: "*System", 3: "Data", 4: "Overlay"}

# SIF arch codes ("02" in the header) <-> Go architecture names (sif's pkg/sif/arch.go).
ARCH_CODES = {
    "386": "01", "amd64": "02", "arm": "03", "arm64": "04", "ppc64": "05", "ppc64le": "06",
    "mips": "07", "mipsle": "08", "mips64": "09", "mips64le": "10", "s390x": "11",
    "riscv64": "12", "loong64": "13",
}
_ARCH_BY_CODE = {code: name for name, code in ARCH_CODES.items()}
# `uname -m` -> Go's GOARCH, the name Apptainer compares an image's arch with.
_GOARCH_OF_MACHINE = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64",
    "loongarch64": "loong64", "i386": "386", "i486": "386", "i586": "386", "i686": "386",
    "armv6l": "arm", "armv7l": "arm", "armv8l": "arm", "mips64": "mips64",
}

GROUP_MASK = 0xF0000000
DEFAULT_GROUP = 1
DESCRIPTORS_OFFSET = 4096
DESCRIPTOR_CAPACITY = 48
ALIGNMENT = 4096
# Apptainer stores `apptainer inspect --all --json` output under this object name.
INSPECT_METADATA_NAME = "inspect-metadata.json"

# launch, magic, version, arch, uuid, then ctime, mtime, dfree, dtotal, descoff, desclen,
# dataoff, datalen.
HEADER = struct.Struct("<32s10s3s3s16s8q")
# datatype, used, id, groupid, link, offset, size, size+padding, ctime, mtime, uid, gid, name,
# extra (type-specific metadata).
DESCRIPTOR = struct.Struct("<iBIII7q128s384s")
PARTITION_EXTRA = struct.Struct("<ii3s")

assert HEADER.size == 128 and DESCRIPTOR.size == 585  # layout guard
SQUASHFS_MAGIC = b"hsqs"
_COPY_CHUNK = 4 << 20
# A sanity bound: real images have 48 descriptors; refuse to read megabytes of garbage tables.
_MAX_DESCRIPTORS = 4096


@dataclass(frozen=True)
class Descriptor:
    """One data object of a SIF image.

    `group_id`/`link` are 0 when unset; the partition fields are None except for partitions.
    """

    datatype: int
    id: int
    group_id: int
    link: int
    offset: int
    size: int
    name: str
    fstype: int | None = None
    parttype: int | None = None
    arch: str | None = None

    @property
    def kind(self) -> str:
        """The object type as `siftool list` names it (e.g. "Def.FILE", "FS")."""
        return DATATYPE_NAMES.get(self.datatype, "Unknown")

    @property
    def is_primary_partition(self) -> bool:
        return self.datatype == DATA_PARTITION and self.parttype == PART_PRIMSYS


@dataclass(frozen=True)
class SifHeader:
    """The global header of a SIF image."""

    launch_script: str
    version: str
    arch: str
    id: uuid.UUID
    created: int
    modified: int
    descriptors_free: int
    descriptors_total: int
    descriptors_offset: int
    descriptors_size: int
    data_offset: int
    data_size: int


def _arch_name(raw: bytes) -> str:
    return _ARCH_BY_CODE.get(raw.rstrip(b"\x00").decode("ascii", "replace"), "unknown")


def host_arch() -> str:
    """This machine's architecture as Go (and so the SIF format and Apptainer) names it."""
    machine = platform.machine()
    try:
        return _GOARCH_OF_MACHINE[machine.lower()]
    except KeyError:
        raise BuildError(f"this machine's architecture {machine!r} has no SIF arch code "
                         f"(known: {', '.join(sorted(set(_GOARCH_OF_MACHINE)))})") from None


class SifImage:
    """A SIF file opened for reading: header, descriptors, and access to each data object."""

    def __init__(self, path: Path, header: SifHeader, descriptors: list[Descriptor], size: int):
        self.path = path
        self.header = header
        self.descriptors = descriptors
        self.file_size = size

    @classmethod
    def open(cls, path: str | os.PathLike, *, require_system_partition: bool = True) -> SifImage:
        """Read the header and descriptors of `path`; raise CorruptImage naming what is wrong."""
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                raw_header = handle.read(HEADER.size)
                if len(raw_header) < HEADER.size:
                    raise CorruptImage(
                        f"{path} is not a SIF image: truncated, the file has {size} bytes but a "
                        f"SIF header needs {HEADER.size}"
                    )
                fields = HEADER.unpack(raw_header)
                if fields[1] != MAGIC:
                    raise CorruptImage(
                        f"{path} is not a SIF image: bad magic (no SIF_MAGIC at byte 32); "
                        "is it a sandbox directory, a plain squashfs or a download error page?"
                    )
                header = SifHeader(
                    launch_script=fields[0].rstrip(b"\x00").decode("utf-8", "replace"),
                    version=fields[2].rstrip(b"\x00").decode("ascii", "replace"),
                    arch=_arch_name(fields[3]),
                    id=uuid.UUID(bytes=fields[4]),
                    created=fields[5],
                    modified=fields[6],
                    descriptors_free=fields[7],
                    descriptors_total=fields[8],
                    descriptors_offset=fields[9],
                    descriptors_size=fields[10],
                    data_offset=fields[11],
                    data_size=fields[12],
                )
                descriptors = cls._read_descriptors(path, handle, header, size)
        except FileNotFoundError as exc:
            raise ImageNotFound(f"image file {path} does not exist") from exc
        except OSError as exc:
            raise CorruptImage(f"cannot read SIF image {path}: {exc.strerror or exc}") from exc
        image = cls(path, header, descriptors, size)
        if require_system_partition:
            image.primary_partition()
        return image

    @staticmethod
    def _read_descriptors(path: Path, handle, header: SifHeader, size: int) -> list[Descriptor]:
        total = header.descriptors_total
        if not 0 <= total <= _MAX_DESCRIPTORS or header.descriptors_offset < HEADER.size:
            raise CorruptImage(
                f"{path} is a corrupt SIF image: implausible descriptor table "
                f"({total} descriptors at byte {header.descriptors_offset})"
            )
        table_end = header.descriptors_offset + total * DESCRIPTOR.size
        if table_end > size:
            raise CorruptImage(
                f"{path} is a corrupt SIF image: truncated, the descriptor table ends at byte "
                f"{table_end} but the file has {size} bytes"
            )
        handle.seek(header.descriptors_offset)
        table = handle.read(total * DESCRIPTOR.size)
        descriptors = []
        for index in range(total):
            fields = DESCRIPTOR.unpack_from(table, index * DESCRIPTOR.size)
            datatype, used, obj_id, group, link, offset, length = fields[:7]
            if not used:
                continue
            name, extra = fields[12], fields[13]
            fstype = parttype = arch = None
            if datatype == DATA_PARTITION:
                fstype, parttype, raw_arch = PARTITION_EXTRA.unpack_from(extra)
                arch = _arch_name(raw_arch)
            kind = DATATYPE_NAMES.get(datatype, f"type {datatype:#x}")
            if offset < 0 or length < 0 or offset + length > size:
                raise CorruptImage(
                    f"{path} is a corrupt SIF image: truncated, object {obj_id} ({kind}) ends at "
                    f"byte {offset + length} but the file has {size} bytes (incomplete download?)"
                )
            descriptors.append(Descriptor(
                datatype=datatype,
                id=obj_id,
                group_id=group & ~GROUP_MASK,
                link=link & ~GROUP_MASK,
                offset=offset,
                size=length,
                name=name.rstrip(b"\x00").decode("utf-8", "replace"),
                fstype=fstype,
                parttype=parttype,
                arch=arch,
            ))
        return descriptors

    # --- convenience views of the header ---------------------------------------------------
    @property
    def version(self) -> str:
        return self.header.version

    @property
    def arch(self) -> str:
        return self.header.arch

    @property
    def id(self) -> uuid.UUID:
        return self.header.id

    @property
    def uuid(self) -> uuid.UUID:
        """The image's unique id (the same as `id`)."""
        return self.header.id

    @property
    def created(self) -> int:
        return self.header.created

    @property
    def modified(self) -> int:
        return self.header.modified

    # --- objects -----------------------------------------------------------------------------
    def primary_partition(self) -> Descriptor:
        """The primary system partition (the root filesystem a runtime starts), of any kind."""
        for descriptor in self.descriptors:
            if descriptor.is_primary_partition:
                return descriptor
        raise CorruptImage(
            f"{self.path} is a SIF image without a primary system partition (nothing to run); "
            f"it holds: {', '.join(d.kind for d in self.descriptors) or 'no objects'}"
        )

    def squashfs_partition(self) -> Descriptor:
        """The primary partition, which must be plain squashfs: what we can unpack or mount.

        Apptainer also starts ext3, encrypted and gocryptfs partitions; without it they cannot
        be opened, so they are refused here (and only here).
        """
        descriptor = self.primary_partition()
        if descriptor.fstype != FS_SQUASH:
            raise CorruptImage(
                f"{self.path}: the primary system partition is {fstype_name(descriptor.fstype)}; "
                "only plain squashfs partitions can be run without Apptainer (use "
                "runtime='apptainer' for this image)"
            )
        return descriptor

    def read_object(self, descriptor: Descriptor) -> bytes:
        """The bytes of one data object (meant for the small ones: deffile, labels, metadata)."""
        with open(self.path, "rb") as handle:
            handle.seek(descriptor.offset)
            data = handle.read(descriptor.size)
        if len(data) != descriptor.size:
            raise CorruptImage(
                f"{self.path}: object {descriptor.id} ({descriptor.kind}) is truncated "
                f"(read {len(data)} of {descriptor.size} bytes); the file changed while reading?"
            )
        return data

    def deffile(self) -> str | None:
        """The definition file the image was built from, if the image carries one."""
        for descriptor in self.descriptors:
            if descriptor.datatype == DATA_DEFFILE:
                return self.read_object(descriptor).decode("utf-8", "replace")
        return None

    def inspect_metadata(self) -> dict | None:
        """Apptainer's `inspect --all` JSON stored in the image (JSON.Generic), if present."""
        return self.json_object(INSPECT_METADATA_NAME)

    def json_object(self, name: str) -> dict | None:
        """The JSON.Generic object called `name` (e.g. the build manifest), if present."""
        for descriptor in self.descriptors:
            if descriptor.datatype == DATA_GENERIC_JSON and descriptor.name == name:
                return self._json_object(descriptor)
        return None

    def labels(self) -> dict:
        """Image labels: a JSON.Labels object if present, else those in Apptainer's metadata."""
        for descriptor in self.descriptors:
            if descriptor.datatype == DATA_LABELS:
                return self._json_object(descriptor)
        metadata = self.inspect_metadata()
        if metadata:
            labels = metadata.get("data", {}).get("attributes", {}).get("labels")
            if isinstance(labels, dict):
                return labels
        return {}

    def _json_object(self, descriptor: Descriptor) -> dict:
        raw = self.read_object(descriptor)
        try:
            value = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptImage(
                f"{self.path}: object {descriptor.id} ({descriptor.kind}) is not valid JSON: {exc}"
            ) from exc
        if not isinstance(value, dict):
            raise CorruptImage(
                f"{self.path}: object {descriptor.id} ({descriptor.kind}) is JSON but not an object"
            )
        return value


def fstype_name(fstype: int | None) -> str:
    return FSTYPE_NAMES.get(fstype or 0, f"filesystem type {fstype}")


# --- what Apptainer checks before it starts an image --------------------------------------------

EXT3_MAGIC_OFFSET = 1080  # s_magic of the ext superblock, which starts at byte 1024
EXT3_MAGIC = b"\x53\xef"


def check_runnable(image: SifImage) -> None:
    """Raise UnrunnableImage (CorruptImage for a broken header) where Apptainer would refuse to
    start `image` (pkg/image/sif.go).

    Its primary partition must be of a filesystem Apptainer knows, squashfs and ext3 ones must
    start with their magic, and its architecture must be this machine's, one this machine runs
    natively (386 on amd64, arm on arm64) or one binfmt_misc emulates ("unknown" passes).
    """
    partition = image.primary_partition()
    if partition.fstype not in APPTAINER_FSTYPES:
        known = ", ".join(fstype_name(fstype) for fstype in APPTAINER_FSTYPES)
        raise UnrunnableImage(f"{image.path}: the primary partition has an unknown filesystem "
                              f"type {partition.fstype} (Apptainer starts {known})")
    with open(image.path, "rb") as handle:
        handle.seek(partition.offset)
        head = handle.read(EXT3_MAGIC_OFFSET + len(EXT3_MAGIC))
    if partition.fstype == FS_SQUASH and head[:4] != SQUASHFS_MAGIC:
        raise CorruptImage(f"{image.path}: the primary partition claims squashfs but has no "
                           "squashfs header (a corrupt or truncated image)")
    if partition.fstype == FS_EXT3 and head[EXT3_MAGIC_OFFSET:] != EXT3_MAGIC:
        raise CorruptImage(f"{image.path}: the primary partition claims ext3 but has no ext3 "
                           "superblock (a corrupt or truncated image)")
    arch, host = partition.arch or "unknown", host_arch()
    if arch != "unknown" and not arch_runs_here(arch, host):
        raise UnrunnableImage(f"{image.path}: the image's architecture ({arch}) could not run "
                              f"on the host's ({host}); build or pull the image for {host}")


# Architectures a CPU runs natively besides its own (the `Compatible` fields of Apptainer's
# internal/pkg/util/machine/machine.go).
_ALSO_RUNS = {"amd64": ("386",), "arm64": ("arm",), "arm64be": ("armbe",),
              "mips64": ("mips",), "mips64le": ("mipsle",)}
# ELF class, byte order and e_machine: Apptainer matches binfmt_misc entries on the ELF header
# these give (the first entry of an architecture in machine.go's table).
_ELF_OF_ARCH = {
    "386": (1, "little", 3), "amd64": (2, "little", 0x3E), "arm": (1, "little", 0x28),
    "arm64": (2, "little", 0xB7), "s390x": (2, "big", 0x16), "ppc64": (2, "big", 0x15),
    "ppc64le": (2, "little", 0x15), "mips": (1, "big", 8), "mipsle": (1, "little", 8),
    "mips64": (2, "big", 8), "mips64le": (2, "little", 8), "riscv64": (2, "little", 0xF3),
    "loong64": (2, "little", 0x102),
}
BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")


def arch_runs_here(arch: str, host: str) -> bool:
    """Apptainer's machine.CompatibleWith: the same arch, a compatible one, or emulated."""
    return arch == host or arch in _ALSO_RUNS.get(host, ()) or _emulated(arch)


def _emulated(arch: str) -> bool:
    """An enabled binfmt_misc entry with the F (fix binary) flag for `arch`'s ELF header."""
    if arch not in _ELF_OF_ARCH:
        return False
    elf_class, order, machine = _ELF_OF_ARCH[arch]
    header = (b"\x7fELF" + bytes([elf_class, 1 if order == "little" else 2, 1]) + bytes(9)
              + (2).to_bytes(2, order) + machine.to_bytes(2, order))
    try:
        if (BINFMT_MISC / "status").read_text() != "enabled\n":
            return False
        entries = list(BINFMT_MISC.iterdir())
    except OSError:
        return False
    for entry in entries:
        try:
            lines = entry.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        fields = dict(line.split(" ", 1) for line in lines if " " in line)
        if ("enabled" in lines and "F" in fields.get("flags:", "")
                and fields.get("magic") == header.hex()):
            return True
    return False


# --- writing ---------------------------------------------------------------------------------

def _aligned(offset: int, alignment: int = ALIGNMENT) -> int:
    return (offset + alignment - 1) // alignment * alignment


# The fields of Apptainer's inspect.Attributes (pkg/inspect/metadata.go), in their Go order; all
# are `omitempty`.
INSPECT_ATTRIBUTES = ("apps", "environment", "labels", "runscript", "test", "helpfile",
                      "deffile", "startscript")
# What Go's encoding/json escapes in strings that Python's json leaves as they are.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
               "\u2029": "\\u2029"}


def inspect_metadata(attributes: dict) -> bytes:
    """inspect-metadata.json as `apptainer build` writes it: json.Marshal of inspect.Metadata.

    Compact, struct fields in Go's order, map keys sorted, empty fields left out, and <, >, &
    escaped as Go does.
    """
    ordered = {}
    for key in INSPECT_ATTRIBUTES:
        value = attributes.get(key)
        if value:
            ordered[key] = dict(sorted(value.items())) if isinstance(value, dict) else value
    unknown = set(attributes) - set(INSPECT_ATTRIBUTES)
    if unknown:
        raise ValueError(f"not Apptainer inspect attributes: {', '.join(sorted(unknown))}")
    text = json.dumps({"data": {"attributes": ordered}, "type": "container"},
                      separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text.encode()


def write_sif(
    out_path: str | os.PathLike,
    *,
    deffile: bytes | None,
    labels: dict | None,
    squashfs_path: str | os.PathLike,
    arch: str = "amd64",
    created: int | None = None,
    json_objects: dict[str, bytes] | None = None,
    attributes: dict | None = None,
) -> str:
    """Write a SIF image the way `apptainer build` lays it out, and return its sha256.

    Objects, all in group 1 and aligned to 4096 bytes: the definition file (Def.FILE),
    Apptainer's inspect metadata (JSON.Generic "inspect-metadata.json") made of `attributes`
    (runscript, environment, labels, ... as layout.inspect_attributes reads them from the
    image; by default just the labels and the definition file), any `json_objects` (name -> JSON
    bytes, e.g. the build manifest), and the squashfs root filesystem as primary system
    partition for `arch`. The squashfs is streamed, and the file appears at `out_path` only when
    complete (temp file + atomic rename).

    The same inputs give the same bytes: the header and descriptor times are `created`
    (default: $SOURCE_DATE_EPOCH, else now) and the image id is derived from the content.
    """
    if arch not in ARCH_CODES:
        raise ValueError(f"unknown architecture {arch!r}; use one of {', '.join(ARCH_CODES)}")
    out_path = Path(out_path)
    squashfs_path = Path(squashfs_path)
    if created is None:
        created = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    created = int(created)
    arch_code = ARCH_CODES[arch].encode() + b"\x00"

    with open(squashfs_path, "rb") as squash:
        if squash.read(4) != SQUASHFS_MAGIC:
            raise BuildError(f"{squashfs_path} is not a squashfs filesystem (no 'hsqs' magic)")
        squash.seek(0)
        squash_size = os.fstat(squash.fileno()).st_size

        # (datatype, data or None for the squashfs, size, name, extra)
        objects: list[tuple[int, bytes | None, int, str, bytes]] = []
        if deffile is not None:
            objects.append((DATA_DEFFILE, deffile, len(deffile), "", b""))
        if attributes is None:
            attributes = {"labels": {str(k): str(v) for k, v in (labels or {}).items()},
                          "deffile": (deffile or b"").decode("utf-8", "replace")}
        metadata = inspect_metadata(attributes)
        objects.append((DATA_GENERIC_JSON, metadata, len(metadata), INSPECT_METADATA_NAME, b""))
        for name, data in sorted((json_objects or {}).items()):
            objects.append((DATA_GENERIC_JSON, data, len(data), name, b""))
        extra = PARTITION_EXTRA.pack(FS_SQUASH, PART_PRIMSYS, arch_code)
        objects.append((DATA_PARTITION, None, squash_size, "", extra))

        # Lay everything out first so the file can be written (and hashed) front to back.
        data_offset = DESCRIPTORS_OFFSET + DESCRIPTOR_CAPACITY * DESCRIPTOR.size
        cursor = data_offset
        table = bytearray()
        placements = []
        for index, (datatype, _data, size, name, obj_extra) in enumerate(objects):
            offset = _aligned(cursor)
            padded = offset - cursor + size
            table += DESCRIPTOR.pack(
                datatype, 1, index + 1, DEFAULT_GROUP | GROUP_MASK, 0, offset, size, padded,
                created, created, 0, 0, name.encode(), obj_extra,
            )
            placements.append(offset)
            cursor = offset + size
        table += bytes(DESCRIPTOR.size * (DESCRIPTOR_CAPACITY - len(objects)))
        header = HEADER.pack(
            LAUNCH_SCRIPT, MAGIC, SPEC_VERSION, arch_code, _content_id(objects, squash).bytes,
            created, created,
            DESCRIPTOR_CAPACITY - len(objects), DESCRIPTOR_CAPACITY, DESCRIPTORS_OFFSET,
            len(table), data_offset, cursor - data_offset,
        )

        digest = hashlib.sha256()  # of the bytes as they are written: no second read
        # perms 0o755: SIF files are executable (their launch script).
        with atomic_output(out_path, perms=0o755) as tmp, tmp.open("wb") as out:
            def emit(chunk: bytes) -> None:
                out.write(chunk)
                digest.update(chunk)

            emit(header)
            emit(bytes(DESCRIPTORS_OFFSET - len(header)))
            emit(bytes(table))
            position = data_offset
            for (_type, data, size, _name, _extra), offset in zip(objects, placements,
                                                                  strict=True):
                emit(bytes(offset - position))
                if data is not None:
                    emit(data)
                else:
                    copied = _copy_stream(squash, emit)
                    if copied != size:
                        raise BuildError(
                            f"{squashfs_path} changed size while being written into "
                            f"{out_path} ({size} -> {copied} bytes)"
                        )
                position = offset + size
    return digest.hexdigest()


def _content_id(objects: list, squash) -> uuid.UUID:
    """An image id that names the content (Apptainer draws a random one): same inputs, same id."""
    digest = hashlib.sha256(b"dacbench-remote image id\0")
    for datatype, data, size, name, extra in objects:
        digest.update(f"{datatype}:{size}:{name}:".encode() + extra)
        if data is not None:
            digest.update(data)
    _copy_stream(squash, digest.update)
    squash.seek(0)
    return uuid.UUID(bytes=digest.digest()[:16], version=5)


def _copy_stream(source, emit) -> int:
    copied = 0
    while True:
        chunk = source.read(_COPY_CHUNK)
        if not chunk:
            return copied
        emit(chunk)
        copied += len(chunk)

