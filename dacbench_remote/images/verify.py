"""`build --verify`: rebuild an experiment version from its recipe and check it against its pin.

A match proves the pinned image can be re-derived from the repository; a mismatch names what
differs (files, packages, objects), which is what a maintainer needs to act on it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._sys.files import sha256_file
from ..config import load_config
from ..errors import BadConfig, ImageError, UnknownBenchmark
from .build import build_image
from .cache import BUILD_CONTEXT, ImageCache
from .catalog import Catalog, ResolvedImage, benchmark_key
from .compare import ImageDifference, compare_images, describe
from .manifest import MANIFEST_NAME
from .sif import SifImage
from .wheelhouse import PipSources


@dataclass
class Verification:
    """The outcome of one rebuild: the two digests, inputs, and what differs if they do."""

    resolved: ResolvedImage
    rebuilt_sha256: str
    rebuilt_inputs: str
    difference: ImageDifference | None = None
    pinned_unavailable: str = ""  # why the pinned image could not be had to compare files

    @property
    def reproduced(self) -> bool:
        return self.rebuilt_sha256 == self.resolved.sha256


def verify_version(benchmark: str, experiment: str | None, *,
                   build: Callable[[Path, Path, PipSources], str], workdir: Path | None = None,
                   against: Path | None = None, sources: PipSources | None = None
                   ) -> Verification:
    """Rebuild `benchmark`@`experiment` with `build(recipe, output, pip_sources) -> sha256` and
    compare. `benchmark` may name an agent of an agent family (e.g. PPO) too.

    The build gets `sources` (default: the config's wheelhouse and offline setting) plus the
    wheelhouse the catalog names for the version. On a mismatch, the pinned image is compared
    with the rebuild file by file: `against` (a copy of it, checked to have the pinned sha256)
    or else what the cache has or can fetch.
    """
    config = load_config()
    catalog = Catalog.load(config.catalog_dirs)
    try:
        resolved = catalog.resolve(benchmark, experiment)
    except UnknownBenchmark:
        if benchmark_key(benchmark) not in map(benchmark_key, catalog.agents()):
            raise
        resolved = catalog.resolve_agent(benchmark, experiment)
    sources = (PipSources.of(config) if sources is None else sources).plus(resolved.wheelhouse)
    if not resolved.sha256:
        raise BadConfig(
            f"{resolved.benchmark} {resolved.experiment} pins no sha256 in "
            f"{resolved.catalog_file}, so there is nothing to verify against; build it and "
            "record its sha256 and inputs there (see docs/catalog.md)")
    if resolved.recipe is None or not resolved.recipe.is_file():
        raise BadConfig(f"{resolved.benchmark} {resolved.experiment} has no recipe to rebuild "
                        f"from (catalog {resolved.catalog_file})")
    cache = ImageCache(config.cache_dir, pip_sources=PipSources.of(config))
    directory = Path(workdir) if workdir else cache.root
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=directory) as tmp:
        rebuilt = Path(tmp) / resolved.image
        digest = build(resolved.recipe, rebuilt, sources)
        manifest = SifImage.open(rebuilt).json_object(MANIFEST_NAME) or {}
        result = Verification(resolved, digest, str(manifest.get("inputs_sha256", "")))
        if result.reproduced:
            return result
        try:
            pinned = _pinned_copy(against, resolved) if against else cache.fetch(resolved,
                                                                                  build=False)
        except ImageError as exc:
            result.pinned_unavailable = str(exc)
            return result
        result.difference = compare_images(pinned, rebuilt)
    return result


def _pinned_copy(path: Path, resolved: ResolvedImage) -> Path:
    """`path` if it is the pinned image (its sha256 is the pin), else BadConfig."""
    digest = sha256_file(Path(path))
    if digest != resolved.sha256:
        raise BadConfig(f"{path} is not the pinned image of {resolved.benchmark} "
                        f"{resolved.experiment}: its sha256 is {digest}, the pin is "
                        f"{resolved.sha256}")
    return Path(path)


def report_lines(result: Verification) -> list[str]:
    """What `build --verify` prints: the verdict, the inputs, and what differs."""
    resolved = result.resolved
    name = f"{resolved.benchmark} {resolved.experiment}"
    if result.reproduced:
        return [f"reproduced: {name} rebuilt from {resolved.recipe.name} has the catalog's "
                f"pinned sha256 {resolved.sha256}"]
    lines = [f"NOT reproduced: {name} rebuilt from {resolved.recipe.name} has sha256 "
             f"{result.rebuilt_sha256}, the catalog ({resolved.catalog_file}) pins "
             f"{resolved.sha256}"]
    if resolved.inputs:
        same = resolved.inputs == result.rebuilt_inputs
        lines.append(f"inputs: {'the same as' if same else 'NOT the same as'} the pin's "
                     f"(rebuilt {result.rebuilt_inputs[:16]}, pinned {resolved.inputs[:16]})"
                     + ("" if not same else "; so the package mirrors served other versions"))
    if result.pinned_unavailable:
        lines.append("the pinned image could not be fetched to compare files: "
                     + result.pinned_unavailable.splitlines()[0])
        lines.append("  to list the differing files, pass a copy of it: --against PINNED.sif")
    elif result.difference is not None:

        files = len(result.difference.files)
        lines.append(f"differences ({files} file{'s' if files != 1 else ''}):")
        lines += describe(result.difference)
    return lines


def default_build(workdir: Path | None, progress: Callable[[str], None]
                  ) -> Callable[[Path, Path, PipSources], str]:
    """A build function for verify_version: our builder, with the packaged build context."""

    def build(recipe: Path, output: Path, sources: PipSources) -> str:
        return build_image(recipe, output, context=BUILD_CONTEXT, progress=progress,
                           workdir=workdir, builder="native", wheelhouse=sources.wheelhouse,
                           offline=sources.offline).sha256

    return build

