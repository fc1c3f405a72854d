"""Wheelhouses: directories of wheels that pip inside `%post` installs from before any index.

Nothing on the build host is visible inside an image build, so the wheels are copied into the
build (and removed before the root filesystem is squashed); pip finds them through `find-links`
and prefers them to an index's files of the same version. `offline` turns the index off
(`no-index`). The wheels that end up in the image are recorded in its manifest by sha256.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._sys.files import sha256_file
from ..config import Config
from ..errors import BuildError

# What pip takes from a find-links directory: wheels and source archives.
DISTRIBUTION_SUFFIXES = (".whl", ".tar.gz", ".zip")
HOW_TO_MAKE = ("make one with `pip download --no-deps PACKAGE==VERSION -d DIR` (repeat per "
               "package; --platform manylinux2014_x86_64 --python-version 3.11 --only-binary=:all: "
               "on a machine unlike the image's)")


@dataclass(frozen=True)
class PipSources:
    """Where pip inside a build finds packages besides the index: wheelhouse directories, in
    order, and whether the index is off (`offline`)."""

    wheelhouse: tuple[Path, ...] = ()
    offline: bool = False

    @classmethod
    def of(cls, config: Config) -> PipSources:
        """The sources the config sets (`wheelhouse`, `offline`) for every build."""
        return cls(tuple(config.wheelhouse), config.offline)

    def plus(self, wheelhouse: Iterable[Path]) -> PipSources:
        """These sources with more wheelhouse directories after the ones already given."""
        more = tuple(Path(d) for d in wheelhouse if Path(d) not in self.wheelhouse)
        return PipSources(self.wheelhouse + more, self.offline)


# The sources of a build without a wheelhouse: the index only.
NO_WHEELHOUSE = PipSources()


def distributions(directory: Path) -> list[Path]:
    """The wheels and source archives in `directory` (not below it), sorted by name."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.name.endswith(DISTRIBUTION_SUFFIXES))


def check_wheelhouse(directories: Iterable[Path]) -> list[Path]:
    """The wheelhouse directories as absolute paths; BuildError for one that is missing or
    holds no distributions, naming it and how to make one."""
    checked = []
    for directory in directories:
        path = Path(directory).expanduser().absolute()
        if not path.is_dir():
            raise BuildError(f"wheelhouse {path} does not exist or is not a directory; "
                             f"{HOW_TO_MAKE}")
        if not distributions(path):
            raise BuildError(f"wheelhouse {path} holds no wheels (*.whl) or source archives; "
                             f"{HOW_TO_MAKE}")
        checked.append(path)
    return checked


def stage_wheelhouse(directories: Iterable[Path], target: Path) -> list[Path]:
    """Put every distribution of the wheelhouse directories into `target` (one flat directory
    pip reads as find-links); return the staged files.

    Hard links where the filesystem allows, else copies (a wheelhouse may be on another
    filesystem, or read-only). One file name in two directories must be the same bytes.
    """
    target.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    for directory in directories:
        for source in distributions(Path(directory)):
            copy = target / source.name
            if source.name in staged:
                if sha256_file(source) != sha256_file(copy):
                    raise BuildError(f"wheelhouse file {source.name} is in {staged[source.name]} "
                                     f"and in {directory} with other contents; keep one")
                continue
            _link_or_copy(source, copy)
            staged[source.name] = Path(directory)
    return sorted(target / name for name in staged)


def _link_or_copy(source: Path, copy: Path) -> None:
    """A hard link if the file is readable for all already (a link shares its mode, which must
    not be changed), else a copy made readable for all: rootless, the build's pip runs as
    another uid."""
    if source.stat().st_mode & 0o444 == 0o444:
        try:
            os.link(source, copy)
            return
        except OSError:
            pass  # another filesystem, or links to others' files are not allowed
    shutil.copyfile(source, copy)
    copy.chmod(0o644)


def pip_options(sources: PipSources, find_links: str) -> dict[str, str]:
    """pip configuration entries that make a build use the wheelhouse staged at `find_links`
    (a path inside the build) first, and with `offline` no index at all."""
    options: dict[str, str] = {}
    if sources.wheelhouse:
        options["find-links"] = find_links
    if sources.offline:
        options["no-index"] = "true"
    return options


def _wheel_record(wheel: Path) -> tuple[str, dict[str, str]] | None:
    """(dist-info directory name, path -> hash) from a wheel's RECORD; None for non-wheels."""
    if not wheel.name.endswith(".whl"):
        return None
    try:
        with zipfile.ZipFile(wheel) as archive:
            records = [n for n in archive.namelist()
                       if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
            if len(records) != 1:
                return None
            text = archive.read(records[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return records[0].split("/")[0], _record_hashes(text)


def _record_hashes(text: str) -> dict[str, str]:
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2 and row[1]}


def wheels_in_root(wheels: Iterable[Path], site_dirs: Iterable[Path]) -> list[dict[str, str]]:
    """The wheels whose files are installed, byte for byte, in one of `site_dirs`.

    A wheel counts when the installed distribution of the same name and version lists every
    file of the wheel's RECORD with the same hash (pip moves `.data/` files elsewhere and
    rewrites scripts, so those are not compared): the image holds exactly that wheel's files,
    whichever source pip took them from. Returns {"file", "sha256"} per wheel, sorted.
    """
    site_dirs = [Path(d) for d in site_dirs]
    found = []
    for wheel in wheels:
        record = _wheel_record(wheel)
        if record is None:
            continue
        dist_info, expected = record
        compared = {path: digest for path, digest in expected.items()
                    if not path.split("/")[0].endswith(".data")}
        for site in site_dirs:
            installed_record = site / dist_info / "RECORD"
            if not installed_record.is_file():
                continue
            installed = _record_hashes(installed_record.read_text(encoding="utf-8",
                                                                  errors="replace"))
            if compared and all(installed.get(path) == digest
                                for path, digest in compared.items()):
                found.append({"file": wheel.name, "sha256": sha256_file(wheel)})
                break
    return sorted(found, key=lambda entry: entry["file"])
