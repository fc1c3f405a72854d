"""From a benchmark name and experiment id to a verified local image file, with its provenance."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..config import Config, load_config
from ..errors import BadConfig
from .cache import BUILT_LOCALLY, ImageCache
from .catalog import Catalog, ResolvedImage
from .wheelhouse import PipSources


def resolve_image(benchmark: str, experiment: str | None = None, *, build: bool = False,
                  progress: bool = True, family: str | None = None,
                  source: str | None = None) -> tuple[Path, dict]:
    """Look the benchmark up in the catalog, fetch (or build) its image into the cache.

    `family` insists on a catalog family (DACBench's `container_name`); `source` picks the
    version published at that URL (DACBench's `container_source`), which the catalog must know,
    because only a catalog entry pins the sha256 that the download is verified against.
    Returns the image path and a provenance record (experiment, catalog and file sha256,
    origin) for the results file.
    """
    config = load_config()
    catalog = Catalog.load(config.catalog_dirs)
    resolved = (_by_source(catalog, benchmark, source) if source
                else catalog.resolve(benchmark, experiment))
    if source and experiment and experiment not in (resolved.experiment,
                                                    resolved.experiment.removeprefix("exp:")):
        raise BadConfig(f"{source} is {resolved.experiment} in the catalog, not {experiment}")
    if family and family != resolved.family:
        raise BadConfig(
            f"container_name={family!r}: {benchmark} {resolved.experiment} lives in image family "
            f"{resolved.family!r} ({resolved.catalog_file}); drop container_name or name that one"
        )
    return _fetch(resolved, config, build=build, progress=progress)


def resolve_agent_image(agent: str, experiment: str | None = None, *, build: bool = False,
                        progress: bool = True) -> tuple[Path, dict]:
    """The agent image serving `agent` (e.g. "PPO") at `experiment` (None: the default), fetched
    or built into the cache like a benchmark's; returns its path and provenance record."""
    config = load_config()
    resolved = Catalog.load(config.catalog_dirs).resolve_agent(agent, experiment)
    return _fetch(resolved, config, build=build, progress=progress)


def _fetch(resolved: ResolvedImage, config: Config, *, build: bool,
           progress: bool) -> tuple[Path, dict]:
    cache = ImageCache(config.cache_dir, pip_sources=PipSources.of(config))
    cached = cache.cached_path(resolved) is not None
    started = time.monotonic()
    path = cache.fetch(resolved, build=build, progress=progress)
    record = {**resolved.provenance(), **cache.provenance(path)}
    if progress:
        how = ("found in the cache" if cached else
               _built(record) if record.get("origin") == BUILT_LOCALLY else
               f"downloaded from {record.get('origin')} and verified")
        print(f"dacbench-remote: image {path.name} for {resolved.benchmark} "
              f"{resolved.experiment}: {how} in {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)
    return path, record


def _built(record: dict) -> str:
    if record.get("reproduces_pin") is True:
        return "built from its recipe, reproducing the catalog's pinned sha256,"
    if record.get("reproduces_pin") is False:
        return "built from its recipe (NOT the catalog's pinned image: own sha256, see above)"
    return "built from its recipe"


def _by_source(catalog: Catalog, benchmark: str, source: str) -> ResolvedImage:
    for version in reversed(catalog.versions(benchmark)):
        if source in version.sources:
            return version
    raise BadConfig(
        f"container_source {source} is not a source of any {benchmark} version in the catalog, "
        "so there is no sha256 to verify a download against and it will not be run. Add it to "
        "a catalog directory with its sha256 (see docs/catalog.md), or download it yourself and "
        "pass the local .sif path"
    )
