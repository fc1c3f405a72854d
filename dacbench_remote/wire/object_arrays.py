"""Numpy object arrays (a vector env's final_obs, infos of mixed types) as the codec carries
them: {OBJECTS: [elements]} on the server, turned back into object arrays on the host."""

from __future__ import annotations

from typing import Any

import numpy

OBJECTS = "__dacbench_remote_object_array__"


def pack_objects(value: Any) -> Any:
    """Infos with object arrays turned into {OBJECTS: list}, which the codec can carry."""
    if isinstance(value, dict):
        return {key: pack_objects(item) for key, item in value.items()}
    if isinstance(value, numpy.ndarray) and value.dtype == object:
        return {OBJECTS: [pack_objects(item) for item in value.tolist()]}
    return value


def unpack_objects(value: Any) -> Any:
    """The inverse of pack_objects (on the host)."""
    if isinstance(value, dict):
        if len(value) == 1 and OBJECTS in value:
            items = value[OBJECTS]
            array = numpy.empty(len(items), dtype=object)
            for i, item in enumerate(items):
                array[i] = unpack_objects(item)
            return array
        return {key: unpack_objects(item) for key, item in value.items()}
    return value
