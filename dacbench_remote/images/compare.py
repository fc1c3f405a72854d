"""Compares two images file by file, so a build that does not reproduce says *what* differs.

Both root filesystems are unpacked into a temporary directory and walked; the SIF objects
beside them (definition file, metadata, build manifest) are compared by digest, and the two
build manifests package by package.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .._sys.files import sha256_file
from ..errors import CorruptImage
from .manifest import MANIFEST_NAME
from .sif import SifImage
from .unsquash import unsquashfs


@dataclass(frozen=True)
class Entry:
    """One path of a root filesystem: its kind, mode, mtime, size and content digest (or target)."""

    kind: str
    mode: int
    mtime: int
    size: int
    digest: str


@dataclass(frozen=True)
class FileDifference:
    """A path that is missing on one side or differs in content, mode or mtime."""

    path: str
    what: str
    left: Entry | None
    right: Entry | None


@dataclass
class ImageDifference:
    """Everything that differs between two images; empty lists mean identical content."""

    objects: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    files: list[FileDifference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.objects or self.packages or self.files)


def compare_images(left: Path, right: Path) -> ImageDifference:
    """What differs between the images `left` and `right` (SIF objects, packages, files)."""
    images = SifImage.open(left), SifImage.open(right)
    difference = ImageDifference(objects=_object_differences(*images),
                                 packages=_package_differences(*images))
    with tempfile.TemporaryDirectory(prefix="dacbench-remote-compare-") as tmp:
        trees = [_walk(_unpack(image, Path(tmp) / name))
                 for image, name in zip(images, ("left", "right"), strict=True)]
    difference.files = _file_differences(*trees)
    return difference


def _object_differences(left: SifImage, right: SifImage) -> list[str]:
    """SIF objects other than the root filesystem whose bytes differ (by kind and name)."""
    def objects(image: SifImage) -> dict[str, str]:
        return {f"{d.kind} {d.name}".strip(): hashlib.sha256(image.read_object(d)).hexdigest()
                for d in image.descriptors if not d.is_primary_partition}

    a, b = objects(left), objects(right)
    return [f"{name}: {'differs' if name in a and name in b else 'only in one image'}"
            for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]


def _package_differences(left: SifImage, right: SifImage) -> list[str]:
    """Package versions that differ between the two build manifests (where both have one)."""
    manifests = left.json_object(MANIFEST_NAME), right.json_object(MANIFEST_NAME)
    if None in manifests:
        return []
    lines = []
    for kind in ("debian", "python"):
        a, b = ({p["name"]: p.get("version", "") for p in m["packages"].get(kind, [])}
                for m in manifests)
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                lines.append(f"{kind} {name}: {a.get(name, '(absent)')} -> "
                             f"{b.get(name, '(absent)')}")
    return lines


def _unpack(image: SifImage, target: Path) -> Path:
    _, problems = unsquashfs(image.path, target, offset=image.squashfs_partition().offset)
    if problems:
        raise CorruptImage(f"cannot unpack {image.path} to compare it: "
                           + "\n".join(problems[-15:]))
    return target


def _walk(root: Path) -> dict[str, Entry]:
    entries = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory) / name
            entries["/" + path.relative_to(root).as_posix()] = _entry(path)
    return entries


def _entry(path: Path) -> Entry:
    info = path.lstat()
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return Entry("symlink", mode, int(info.st_mtime), 0, os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return Entry("dir", mode, int(info.st_mtime), 0, "")
    if not stat.S_ISREG(info.st_mode):
        return Entry("special", mode, int(info.st_mtime), 0, "")
    return Entry("file", mode, int(info.st_mtime), info.st_size, sha256_file(path))


def _file_differences(left: dict[str, Entry], right: dict[str, Entry]) -> list[FileDifference]:
    found = []
    for path in sorted(set(left) | set(right)):
        a, b = left.get(path), right.get(path)
        if a == b:
            continue
        if a is None or b is None:
            what = "only in the rebuilt image" if a is None else "only in the pinned image"
        else:
            what = ", ".join(name for name, x, y in (
                ("kind", a.kind, b.kind), ("content", a.digest, b.digest),
                ("size", a.size, b.size), ("mode", a.mode, b.mode),
                ("mtime", a.mtime, b.mtime)) if x != y)
        found.append(FileDifference(path, what, a, b))
    return found


def describe(difference: ImageDifference, *, limit: int = 50) -> list[str]:
    """Report lines: objects, package versions, then up to `limit` files (path, size, digest)."""
    lines = [f"  object  {line}" for line in difference.objects]
    lines += [f"  package {line}" for line in difference.packages]
    for item in difference.files[:limit]:
        lines.append(f"  file    {item.path}: {item.what} ({_side(item.left)} -> "
                     f"{_side(item.right)})")
    if len(difference.files) > limit:
        lines.append(f"  ... and {len(difference.files) - limit} more files")
    return lines


def _side(entry: Entry | None) -> str:
    if entry is None:
        return "absent"
    if entry.kind == "file":
        return f"{entry.size} B sha256 {entry.digest[:12]} mode {entry.mode:o}"
    return f"{entry.kind} {entry.digest}".rstrip() + f" mode {entry.mode:o}"
