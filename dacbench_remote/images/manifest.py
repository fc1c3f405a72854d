"""The build manifest: what an image was built from (recipe, inputs, epoch, every package).

Our builder stores it in the image as a JSON object beside Apptainer's metadata, so `inspect`
answers "which numpy is in there?" without unpacking anything, and two builds can be compared
package by package.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._sys.files import sha256_file
from ..errors import BuildError
from .native import host_only_files
from .recipe import Recipe
from .unsquash import unsquashfs
from .wheelhouse import wheels_in_root

MANIFEST_NAME = "dacbench-remote-manifest.json"
MANIFEST_FORMAT = 1
# Bumped whenever the builder lays out the same inputs differently (the digest names the output).
BUILDER_FORMAT = 1
# Build arguments that say where packages come from, not which: they stay out of the digest.
SOURCE_ARGUMENTS = ("mirror",)
# Where pip (Debian's Python) installs: /usr/local for pip, /usr for Debian's packages.
_SITE_DIRS = ("usr/local/lib/python3*/dist-packages", "usr/lib/python3/dist-packages")
_PACKAGE_PATHS = (
    "var/lib/dpkg/status",
    "usr/local/lib/python3*/dist-packages/*.dist-info/METADATA",
    "usr/local/lib/python3*/dist-packages/*.dist-info/RECORD",
    "usr/lib/python3/dist-packages/*.dist-info/METADATA",
    "usr/lib/python3/dist-packages/*.dist-info/RECORD",
)


def inputs_digest(recipe: Recipe, context: Path) -> str:
    """sha256 of everything a build reads besides the package archives: the recipe (with its
    build arguments, except the mirror) and every %files source as the build copies it.

    Two builds with the same inputs digest from the same package versions give the same image.
    """
    digest = hashlib.sha256(f"dacbench-remote inputs v{BUILDER_FORMAT}\0".encode())
    digest.update(recipe.text.encode() + b"\0")
    for name, value in sorted(recipe.variables.items()):
        if name not in SOURCE_ARGUMENTS:
            digest.update(f"arg {name}={value}\0".encode())
    for copy in recipe.files:
        source = Path(copy.source)
        source = source if source.is_absolute() else context / source
        digest.update(f"files {copy.destination}\0".encode())
        for relative, kind, content in _tree(source):
            digest.update(f"{relative}\0{kind}\0".encode() + content + b"\0")
    return digest.hexdigest()


def _tree(top: Path):
    """(relative path, kind, content) of `top` and below, in a fixed order, as %files copies it
    (symlinks followed, host bytecode left out, only the executable bit of modes kept)."""
    ignored = host_only_files
    stack = [(top, ".")]
    while stack:
        path, relative = stack.pop()
        if path.is_dir():
            yield relative, "dir", b""
            names = sorted(p.name for p in path.iterdir())
            skip = ignored(str(path), names)
            stack += [(path / n, f"{relative}/{n}") for n in reversed(names) if n not in skip]
        else:
            kind = "exec" if path.stat().st_mode & 0o111 else "file"
            yield relative, kind, path.read_bytes()


def read_packages(squashfs: Path, offset: int = 0) -> dict[str, list[dict[str, str]]]:
    """The Debian and Python packages installed in a squashfs root filesystem (at `offset`)."""
    return _read_root(squashfs, offset, wheels=())[0]


def _read_root(squashfs: Path, offset: int, wheels: Sequence[Path]
               ) -> tuple[dict[str, list[dict[str, str]]], list[dict[str, str]]]:
    """read_packages, and which of `wheels` are installed in the image (wheels_in_root)."""
    with tempfile.TemporaryDirectory(prefix="dacbench-remote-manifest-") as tmp:
        root = Path(tmp) / "root"
        _, problems = unsquashfs(squashfs, root, offset=offset, paths=_PACKAGE_PATHS)
        if problems:
            raise BuildError(f"cannot read the package lists of {squashfs}: "
                             + "\n".join(problems[-15:]))
        packages = {"debian": _debian_packages(root / "var/lib/dpkg/status"),
                    "python": _python_packages(root)}
        site_dirs = sorted(root.glob(_SITE_DIRS[0])) + sorted(root.glob(_SITE_DIRS[1]))
        return packages, wheels_in_root(wheels, site_dirs)


def _debian_packages(status: Path) -> list[dict[str, str]]:
    if not status.is_file():
        return []
    packages = []
    for paragraph in status.read_text(errors="replace").split("\n\n"):
        fields = dict(_fields(paragraph))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append({"name": fields["Package"], "version": fields.get("Version", ""),
                             "architecture": fields.get("Architecture", "")})
    return sorted(packages, key=lambda p: (p["name"], p["architecture"]))


def _python_packages(root: Path) -> list[dict[str, str]]:
    packages = []
    for metadata in sorted(root.glob("usr/**/*.dist-info/METADATA")):
        fields = dict(_fields(metadata.read_text(errors="replace").split("\n\n", 1)[0]))
        record = metadata.with_name("RECORD")
        packages.append({
            "name": fields.get("Name", metadata.parent.name),
            "version": fields.get("Version", ""),
            "location": "/" + metadata.parent.parent.relative_to(root).as_posix(),
            # RECORD lists the sha256 of every installed file: one digest for the whole install.
            "record_sha256": sha256_file(record) if record.is_file() else "",
        })
    return sorted(packages, key=lambda p: (p["name"].lower(), p["location"]))


def _fields(paragraph: str):
    for line in paragraph.splitlines():
        if line[:1] not in (" ", "\t", "") and ":" in line:
            key, _, value = line.partition(":")
            yield key.strip(), value.strip()


def build_manifest(recipe: Recipe, context: Path, squashfs: Path, *, epoch: int,
                   builder: str, wheels: Sequence[Path] = ()) -> dict[str, Any]:
    """The manifest of a finished build, from its inputs and the squashfs it produced.

    `wheels` are the wheelhouse's files the build could use; those installed in the image
    are recorded (file name and sha256) under "wheelhouse", a key only such builds have.
    """
    packages, used = _read_root(squashfs, 0, wheels)
    manifest = {
        "format": MANIFEST_FORMAT,
        "builder": builder,
        "recipe": recipe.path.name,
        "recipe_sha256": hashlib.sha256(recipe.text.encode()).hexdigest(),
        "inputs_sha256": inputs_digest(recipe, context),
        "source_date_epoch": epoch,
        "bootstrap": {"os_version": recipe.os_version, "include": recipe.include},
        "packages": packages,
    }
    if wheels:
        manifest["wheelhouse"] = used
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as stored: sorted keys, so equal manifests are equal bytes."""
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def package_versions(manifest: dict[str, Any], *names: str) -> dict[str, str]:
    """name -> version for the Python packages asked for (case-insensitive), where installed."""
    wanted = {name.lower(): name for name in names}
    found = {}
    for package in manifest.get("packages", {}).get("python", []):
        key = package.get("name", "").lower().replace("_", "-")
        if key in wanted:
            found[wanted[key]] = package.get("version", "")
    return found
