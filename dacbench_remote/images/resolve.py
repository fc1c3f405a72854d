"""From a benchmark name and experiment id to a verified local image file, with its provenance."""

from __future__ import annotations

from pathlib import Path

from ..config import load_config
from .cache import ImageCache
from .catalog import Catalog


def resolve_image(benchmark: str, experiment: str | None = None, *, build: bool = False,
                  progress: bool = True) -> tuple[Path, dict]:
    """Look the benchmark up in the catalog, fetch (or build) its image into the cache.

    Returns the image path and a provenance record (experiment, catalog and file sha256,
    origin) for the results file.
    """
    config = load_config()
    resolved = Catalog.load(config.catalog_dirs).resolve(benchmark, experiment)
    cache = ImageCache(config.cache_dir)
    path = cache.fetch(resolved, build=build, progress=progress)
    return path, {**resolved.provenance(), **cache.provenance(path)}
