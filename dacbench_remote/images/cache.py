"""The image cache: verified images only, fetched once per machine (or shared filesystem).

Layout of the cache directory, per image file NAME:
  NAME          the image, present only after its sha256 was verified (atomic rename)
  NAME.sha256   `sha256sum -c` compatible digest plus size and mtime, for cheap re-checks
  NAME.json     provenance: origin (URL, path or "built-locally"), sha256, fetched_at
  NAME.part     an interrupted download, kept to resume (never used as an image)
  NAME.lock     flock target that makes concurrent processes fetch NAME once
Locally built images of pinned versions live under `STEM.local.sif`, next to the pinned one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._sys.files import atomic_write_text, fsync_file, locked, sha256_file
from ..errors import (
    BadConfig,
    BuildError,
    ChecksumMismatch,
    DownloadError,
    ImageError,
    ImageNotFound,
)
from .build import build_image
from .catalog import ResolvedImage
from .download import SourceFailed
from .manifest import MANIFEST_NAME
from .sif import SifImage
from .sources import fetch_source
from .wheelhouse import NO_WHEELHOUSE, PipSources

logger = logging.getLogger(__name__)

SIDECARS = (".sha256", ".json", ".part", ".lock")
BUILT_LOCALLY = "built-locally"

# (recipe, output, progress, pip sources) -> the sha256 the builder reports for output (or None).
Builder = Callable[[Path, Path, bool, PipSources], "str | None"]


# Recipes copy `dacbench_remote` into the image with %files: their build context is the directory
# holding the package (the repository root in a checkout, site-packages when installed).
BUILD_CONTEXT = Path(__file__).resolve().parents[2]


def default_builder(recipe: Path, output: Path, progress: bool,
                    sources: PipSources = NO_WHEELHOUSE) -> str | None:
    """Build with images.build (the builder a cache uses unless given another)."""
    def report(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = build_image(recipe, output, progress=report if progress else None,
                         context=BUILD_CONTEXT, wheelhouse=sources.wheelhouse,
                         offline=sources.offline)
    return getattr(result, "sha256", None)


@dataclass(frozen=True)
class CachedImage:
    """One entry of `cache ls`: state is verified, unverified (re-hashed on next use) or partial."""

    name: str
    path: Path
    size: int
    state: str
    sha256: str = ""
    origin: str = ""
    fetched_at: str = ""


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-hashing one cached image against its recorded digest."""

    name: str
    path: Path
    ok: bool
    expected: str
    actual: str
    problem: str = ""


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _read_digest_record(path: Path) -> tuple[str, int, int] | None:
    """(sha256, size, mtime_ns) from NAME.sha256, or None if missing or unreadable."""
    try:
        lines = _sidecar(path, ".sha256").read_text(encoding="utf-8").splitlines()
        digest = lines[0].split()[0]
        fields = dict(item.split("=", 1) for item in lines[1].lstrip("# ").split())
        return digest, int(fields["size"]), int(fields["mtime_ns"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def _write_digest_record(path: Path, digest: str, stat: os.stat_result) -> None:
    atomic_write_text(
        _sidecar(path, ".sha256"),
        f"{digest}  {path.name}\n# size={stat.st_size} mtime_ns={stat.st_mtime_ns}\n",
        durable=False,
    )


def _read_provenance(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_sidecar(path, ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _built_inputs(image: Path) -> str:
    """The inputs digest a build recorded in its manifest ("" for builders that record none)."""

    try:
        manifest = SifImage.open(image).json_object(MANIFEST_NAME) or {}
    except ImageError:
        return ""
    return str(manifest.get("inputs_sha256", ""))


def not_reproduced_message(resolved: ResolvedImage, actual: str, inputs: str) -> str:
    """Why a local build is not the pinned image, and what that means for the user."""
    if resolved.inputs and inputs and inputs != resolved.inputs:
        cause = (f"the recipe or the files it copies changed since the pin (inputs "
                 f"{inputs[:12]}, pinned from {resolved.inputs[:12]})")
    elif resolved.inputs and inputs:
        cause = ("the recipe's inputs are those of the pin, so the package mirrors served "
                 "other versions than when it was pinned")
    else:
        cause = "the catalog records no inputs digest to tell why"
    return (f"the image built for {resolved.benchmark} {resolved.experiment} has sha256 "
            f"{actual[:16]}..., not the catalog's pinned {resolved.sha256[:16]}...: {cause}. "
            f"It is used and recorded as built-locally with its own digest; `dacbench-remote "
            f"build --verify {resolved.benchmark}@{resolved.experiment}` lists what differs")


class ImageCache:
    """A directory of verified images; `fetch` returns one, downloading or building it once.

    Builds use `pip_sources` (the config's wheelhouse and offline setting) plus the wheelhouse
    the catalog names for the version.
    """

    def __init__(self, root: Path | str, *, builder: Builder | None = None,
                 connect_timeout: float = 15.0, read_timeout: float = 60.0, attempts: int = 3,
                 pip_sources: PipSources = NO_WHEELHOUSE):
        self.root = Path(root).expanduser().absolute()
        self.builder = builder or default_builder
        self.pip_sources = pip_sources
        self.connect_timeout, self.read_timeout, self.attempts = (
            connect_timeout, read_timeout, attempts)

    # -- names ---------------------------------------------------------------------------------

    def path_for(self, resolved: ResolvedImage) -> Path:
        """Where the image lives in the cache (the local build if nothing is pinned)."""
        if resolved.pinned:
            return self.root / resolved.image
        return self.local_build_path(resolved)

    def local_build_path(self, resolved: ResolvedImage) -> Path:
        """Where a locally built image of this version lives (never confused with the pinned)."""
        name = Path(resolved.image)
        return self.root / f"{name.stem}.local{name.suffix or '.sif'}"

    # -- checks --------------------------------------------------------------------------------

    def _cheap_ok(self, path: Path, expected: str | None) -> bool:
        """True if `path` was verified before and is unchanged since (size and mtime)."""
        record = _read_digest_record(path)
        if record is None:
            return False
        try:
            stat = path.stat()
        except OSError:
            return False
        digest, size, mtime_ns = record
        if expected is not None and digest != expected:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns)

    def is_cached(self, resolved: ResolvedImage) -> bool:
        """Whether `fetch` would return at once (cheap check: recorded digest, size and mtime)."""
        if resolved.pinned:
            return self._cheap_ok(self.path_for(resolved), resolved.sha256)
        return self._cheap_ok(self.path_for(resolved), None)

    def cached_path(self, resolved: ResolvedImage) -> Path | None:
        """The verified pinned image if cached, else a verified local build, else None."""
        if self.is_cached(resolved):
            return self.path_for(resolved)
        local = self.local_build_path(resolved)
        return local if self._cheap_ok(local, None) else None

    def provenance(self, path: Path) -> dict[str, Any]:
        """Where a cached image came from: origin, sha256, fetched_at (for results files)."""
        record = _read_provenance(Path(path))
        if record is None:
            raise ImageNotFound(
                f"no provenance record {path}.json; fetch the image through the cache"
            )
        return record

    # -- locking -------------------------------------------------------------------------------

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise BadConfig(
                f"cache directory {self.root} is not writable ({exc.strerror or exc}); set "
                "`cache_dir` in the config file or $DACBENCH_REMOTE_CACHE"
            ) from exc

    @contextlib.contextmanager
    def _locked(self, path: Path, *, wait: bool = True, progress: bool = True) -> Iterator[bool]:
        """Hold the cross-process lock of `path`; yields False if wait=False and it is busy."""

        def announce() -> None:
            if progress and sys.stderr.isatty():
                sys.stderr.write(f"waiting for another process fetching {path.name}...\n")
            logger.info("waiting for another process fetching %s", path.name)

        # In a shared cache the lock file may be someone else's: locked() then opens it read-only.
        with locked(_sidecar(path, ".lock"), blocking=wait, on_wait=announce) as free:
            yield free

    # -- fetching ------------------------------------------------------------------------------

    def fetch(self, resolved: ResolvedImage, *, build: bool = False, progress: bool = True) -> Path:
        """A verified image file for `resolved`: from the cache, its sources, or (build) a recipe.

        Concurrent callers (threads or processes, also on a shared filesystem with working
        flock) download once; the others wait and reuse the verified file.
        """
        if not resolved.pinned:
            local = self.local_build_path(resolved)
            if self._cheap_ok(local, None):
                return local
            if not build:
                recipe = f" from {resolved.recipe}" if resolved.recipe else ""
                raise ImageNotFound(
                    f"{resolved.benchmark} {resolved.experiment} has no pinned image (empty "
                    f"sha256 in {resolved.catalog_file}); build it locally{recipe} with --build "
                    "(build=True)"
                )
            return self._build(resolved, progress)

        target = self.path_for(resolved)
        if self._cheap_ok(target, resolved.sha256):
            return target
        self._ensure_root()
        with self._locked(target, progress=progress):
            if self._cheap_ok(target, resolved.sha256) or self._adopt(target, resolved.sha256):
                return target
            failures = self._download(resolved, target, progress)
            if not failures and resolved.sources:
                return target
        if build:
            return self._build(resolved, progress)
        raise self._fetch_error(resolved, failures)

    def _adopt(self, target: Path, expected: str) -> bool:
        """A file with no valid record (copied in, or touched): keep it only if it hashes right."""
        if not target.is_file():
            return False
        actual = sha256_file(target)
        if actual == expected:
            _write_digest_record(target, actual, target.stat())
            if _read_provenance(target) is None:
                self._write_provenance(target, "found-in-cache", actual)
            return True
        logger.warning("%s in the cache has sha256 %s, not %s; replacing it",
                       target.name, actual, expected)
        # The .part stays: it may be a resumable download of the right image.
        for victim in (target, _sidecar(target, ".sha256"), _sidecar(target, ".json")):
            victim.unlink(missing_ok=True)
        return False

    def _download(self, resolved: ResolvedImage, target: Path,
                  progress: bool) -> list[tuple[str, str | ChecksumMismatch]]:
        """Try each source in order until one verifies; return (source, failure) for the others.

        An empty list after trying at least one source means the image is in place.
        """
        part = _sidecar(target, ".part")
        failures: list[tuple[str, str | ChecksumMismatch]] = []
        for source in resolved.sources:
            options = dict(connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                           attempts=self.attempts, label=target.name, progress=progress,
                           expected_sha256=resolved.sha256)
            try:
                fetched = fetch_source(source, part, **options)
                if fetched.sha256 != resolved.sha256 and fetched.resumed:
                    # The kept .part may stem from another, broken transfer: start over once.
                    part.unlink(missing_ok=True)
                    fetched = fetch_source(source, part, **options)
            except SourceFailed as exc:
                failures.append((source, str(exc)))
                logger.warning("could not fetch %s from %s: %s", target.name, source, exc)
                continue
            if fetched.sha256 != resolved.sha256:
                part.unlink(missing_ok=True)
                mismatch = ChecksumMismatch(
                    f"{target.name} downloaded from {source}", resolved.sha256, fetched.sha256
                )
                failures.append((source, mismatch))
                logger.warning("%s", mismatch)
                continue
            self._install(part, target, fetched.sha256, source)
            return []
        return failures

    def _fetch_error(self, resolved: ResolvedImage,
                     failures: list[tuple[str, str | ChecksumMismatch]]) -> Exception:
        what = f"{resolved.image} ({resolved.benchmark} {resolved.experiment})"
        hint = f"; or build it from {resolved.recipe} with --build" if resolved.recipe else ""
        local = self.local_build_path(resolved)
        if self._cheap_ok(local, None):
            hint += f"; a locally built image exists ({local.name}): --build uses it"
        if not resolved.sources:
            return ImageNotFound(
                f"{what} is not in the cache {self.root} and {resolved.catalog_file} lists no "
                f"sources for it; add a source or copy the file into the cache{hint}"
            )
        mismatches = [f for _, f in failures if isinstance(f, ChecksumMismatch)]
        if len(mismatches) == len(failures):
            return mismatches[-1]
        lines = "\n".join(
            f"  - {source}: "
            + (f"sha256 mismatch: expected {f.expected}, got {f.actual}"
               if isinstance(f, ChecksumMismatch) else f)
            for source, f in failures
        )
        return DownloadError(
            f"could not download {what} from any source:\n{lines}\n"
            f"Check the network and the sources in {resolved.catalog_file}{hint}"
        )

    def _install(self, part: Path, target: Path, digest: str, origin: str, **extra: Any) -> None:
        """Record a verified `.part` and atomically rename it into place."""
        fsync_file(part)
        stat = part.stat()
        self._write_provenance(target, origin, digest, **extra)
        # The rename keeps the mtime, so the digest record written now matches the final file.
        _write_digest_record(target, digest, stat)
        os.replace(part, target)

    def _write_provenance(self, target: Path, origin: str, digest: str, **extra: Any) -> None:
        record = {"image": target.name, "origin": origin, "sha256": digest,
                  "fetched_at": _now(), **extra}
        atomic_write_text(_sidecar(target, ".json"), json.dumps(record, indent=2) + "\n",
                          durable=False)

    def _build(self, resolved: ResolvedImage, progress: bool) -> Path:
        """Build the version's recipe. A build that reproduces the pinned sha256 *is* the pinned
        image and goes where a download would; any other goes to STEM.local.sif, recorded as
        built-locally with its own digest, and is never taken for the pinned one."""
        target = self.local_build_path(resolved)
        recipe = resolved.recipe
        if recipe is None or not recipe.is_file():
            raise BuildError(
                f"cannot build {resolved.benchmark} {resolved.experiment}: recipe {recipe} "
                f"(from {resolved.catalog_file}) does not exist"
            )
        self._ensure_root()
        with self._locked(target, progress=progress):
            if self._cheap_ok(target, None):
                return target
            part = _sidecar(target, ".part")
            part.unlink(missing_ok=True)
            try:
                reported = self.builder(recipe, part, progress,
                                        self.pip_sources.plus(resolved.wheelhouse))
                if not part.is_file():
                    raise BuildError(f"building {recipe} finished but wrote no image {part}")
                actual = sha256_file(part)
                if reported and reported != actual:
                    raise BuildError(
                        f"the builder reported sha256 {reported} for {part}, but the file "
                        f"hashes to {actual}"
                    )
                facts = dict(recipe=str(recipe), recipe_sha256=sha256_file(recipe),
                             catalog_sha256=resolved.sha256, experiment=resolved.experiment,
                             inputs_sha256=_built_inputs(part), pinned_inputs=resolved.inputs)
                if resolved.pinned and actual == resolved.sha256:
                    pinned = self.path_for(resolved)
                    with self._locked(pinned, progress=progress):
                        self._install(part, pinned, actual, BUILT_LOCALLY,
                                      reproduces_pin=True, **facts)
                    return pinned
                self._install(part, target, actual, BUILT_LOCALLY,
                              reproduces_pin=False if resolved.pinned else None, **facts)
                if resolved.pinned:
                    logger.warning("%s", not_reproduced_message(resolved, actual,
                                                                facts["inputs_sha256"]))
            finally:
                part.unlink(missing_ok=True)
        return target

    # -- maintenance ---------------------------------------------------------------------------

    def _images(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir()
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(SIDECARS)
        )

    def list(self) -> list[CachedImage]:
        """Every image and partial download in the cache, with its recorded origin."""
        entries = []
        for path in self._images():
            record = _read_provenance(path) or {}
            state = "verified" if self._cheap_ok(path, None) else "unverified"
            entries.append(CachedImage(
                path.name, path, path.stat().st_size, state, record.get("sha256", ""),
                record.get("origin", ""), record.get("fetched_at", "")))
        if self.root.is_dir():
            for part in sorted(self.root.glob("*.part")):
                name = part.name.removesuffix(".part")
                entries.append(CachedImage(name, part, part.stat().st_size, "partial"))
        return entries

    def verify(self, *, remove: bool = False) -> list[VerifyResult]:
        """Re-hash every cached image against its recorded digest; remove=True deletes bad ones."""
        results = []
        for path in self._images():
            record = _read_provenance(path) or {}
            digest_record = _read_digest_record(path)
            expected = record.get("sha256") or (digest_record[0] if digest_record else "")
            actual = sha256_file(path)
            if not expected:
                problem = "no record of its digest (not fetched through the cache)"
            elif actual != expected:
                problem = f"sha256 mismatch: recorded {expected}, file hashes to {actual}"
            else:
                problem = ""
                _write_digest_record(path, actual, path.stat())
            if problem and remove:
                with self._locked(path, wait=False) as free:
                    if free:
                        self._remove(path)
                        problem += "; removed"
                    else:
                        problem += "; in use by a running fetch, not removed"
            results.append(VerifyResult(path.name, path, not problem, expected, actual, problem))
        return results

    def _remove(self, path: Path) -> list[Path]:
        removed = []
        # The .lock stays: deleting it while another process waits on it would split the lock.
        for victim in (path, *(_sidecar(path, s) for s in (".sha256", ".json", ".part"))):
            if victim.exists():
                victim.unlink()
                removed.append(victim)
        return removed

    def prune(self, keep: set[str] | None = None) -> list[Path]:
        """Remove interrupted downloads and orphaned records; with `keep`, also every image whose
        file name is not in it (keep=set() empties the cache). Busy images are skipped."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        images = {p.name for p in self._images()}
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            name = path.name
            for suffix in SIDECARS:
                name = name.removesuffix(suffix)
            image = self.root / name
            drop_image = path.name == name and keep is not None and name not in keep
            orphan = path.name != name and name not in images and not path.name.endswith(".lock")
            if not (drop_image or orphan):
                continue
            with self._locked(image, wait=False) as free:
                if not free:
                    logger.info("not pruning %s: a fetch is running", name)
                    continue
                if drop_image:
                    removed += self._remove(image)
                elif path.exists():
                    path.unlink()
                    removed.append(path)
        return removed
