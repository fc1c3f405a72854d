"""Images: the catalog, the cache with verified downloads, SIF reading and building.

Names load lazily, as in the package root: the server imports this package's parent inside
minimal images, and the builder's modules need nothing there.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Catalog": "catalog",
    "ImageCache": "cache",
    "SifImage": "sif",
    "write_sif": "sif",
    "Recipe": "recipe",
    "parse_recipe": "recipe",
    "BuildResult": "build",
    "build_image": "build",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dacbench_remote.images' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
