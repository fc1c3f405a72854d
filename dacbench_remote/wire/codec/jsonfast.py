"""Strict compact JSON text from a tree and back, without the per-call overhead of
``json.dumps``/``json.loads`` (the encoder and the scanner are built once)."""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder
from typing import Any


def _not_json(obj: Any) -> Any:
    raise TypeError(f"internal error: {type(obj).__name__} reached the JSON encoder")


def _make_json_writer() -> Callable[[Any], str]:
    """Strict compact JSON; the C encoder built once (json.dumps rebuilds it on every call)."""
    c_make = getattr(encoder, "c_make_encoder", None)
    if c_make is not None:
        try:
            c_encode = c_make(
                None,
                _not_json,
                encoder.encode_basestring_ascii,
                None,
                ":",
                ",",
                False,
                False,
                False,
            )
        except TypeError:  # a Python whose C encoder takes other arguments
            c_encode = None
        if c_encode is not None:
            return lambda tree: "".join(c_encode(tree, 0))
    fallback = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)
    return fallback.encode


json_text = _make_json_writer()
"""Strict compact JSON text (ASCII only, no NaN/Infinity) of a tree of JSON types."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


_json_scan = json.JSONDecoder(parse_constant=_reject_constant).scan_once


def parse_json(text: str) -> Any:
    """Strict JSON text to tree; raises ValueError. Skips json.loads' per-call overhead."""
    try:
        tree, end = _json_scan(text, 0)
    except StopIteration as e:
        raise ValueError(f"no JSON value at character {e.value}") from None
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return tree
