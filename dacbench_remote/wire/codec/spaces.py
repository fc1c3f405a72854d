"""The gymnasium types that cross the wire (spaces, GraphInstance, EnvSpec, WrapperSpec): one class
per type holds its encoder, its decoder and its child listing, and ``register`` adds them to the core."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .core import (
    _CHILDREN,
    _DECODERS,
    _ENCODERS,
    TAG,
    _dec,
    _dec_list_field,
    _dtype,
    _enc,
    _enc_dict,
    _enc_ndarray,
)

# EnvSpec fields that gymnasium 0.29 has and 1.0 removed; a 1.x EnvSpec refuses them.
OLD_SPEC_FIELDS = ("autoreset", "apply_api_compatibility")


def portable_spec_fields(fields: dict) -> dict:
    """EnvSpec fields without 0.29-only ones left at their default (False), so any side reads them.

    A 0.29 spec then means the same on a 1.x host, and 0.29 fills in the defaults from 1.x.
    """
    return {k: v for k, v in fields.items() if not (k in OLD_SPEC_FIELDS and v is False)}


class Kind:
    """How one gymnasium type crosses: ``encode(value, bufs)`` returns its node, tagged ``tag``;
    ``decode(node, bufs)`` rebuilds it; ``children(value)`` lists ``(path segment, child)`` pairs
    for error messages.

    ``tag`` is ``"gym."`` + the type's name in gymnasium's ``home`` module (``spaces`` or
    ``envs.registration``); :func:`register` sets ``gym_type``.
    """

    tag: str
    home = "spaces"
    gym_type: type

    @property
    def name(self) -> str:
        return self.tag.removeprefix("gym.")

    def children(self, value: Any) -> list[tuple[str, Any]]:
        return []


def _space_field(node: dict, bufs: Sequence | None, key: str) -> Any:
    from gymnasium.spaces import Space  # loaded: register() ran before any decoder

    s = _dec(node[key], bufs)
    if not isinstance(s, Space):
        raise ValueError(f"field {key!r} must be a gymnasium space, got {type(s).__name__}")
    return s


class BoxKind(Kind):
    tag = "gym.Box"

    def encode(self, s: Any, bufs: list | None) -> dict:
        low, high = _enc_ndarray(s.low, bufs), _enc_ndarray(s.high, bufs)
        return {TAG: self.tag, "d": s.dtype.str, "s": list(s.shape), "lo": low, "hi": high}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        low, high = _dec(node["lo"], bufs), _dec(node["hi"], bufs)
        return self.gym_type(low, high, shape=tuple(node["s"]), dtype=_dtype(node["d"]))


class DiscreteKind(Kind):
    tag = "gym.Discrete"

    def encode(self, s: Any, bufs: list | None) -> dict:
        node = {TAG: self.tag, "n": int(s.n), "start": int(s.start)}
        if s.dtype != np.int64:  # gymnasium < 1.0 has no dtype argument; omit the default
            node["d"] = s.dtype.str
        return node

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        if "d" in node:
            return self.gym_type(node["n"], start=node["start"], dtype=_dtype(node["d"]))
        return self.gym_type(node["n"], start=node["start"])


class MultiDiscreteKind(Kind):
    tag = "gym.MultiDiscrete"

    def encode(self, s: Any, bufs: list | None) -> dict:
        nvec, start = _enc_ndarray(np.asarray(s.nvec), bufs), _enc_ndarray(np.asarray(s.start), bufs)
        return {TAG: self.tag, "d": s.dtype.str, "nvec": nvec, "start": start}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        nvec, start = _dec(node["nvec"], bufs), _dec(node["start"], bufs)
        return self.gym_type(nvec, dtype=_dtype(node["d"]), start=start)


class MultiBinaryKind(Kind):
    tag = "gym.MultiBinary"

    def encode(self, s: Any, bufs: list | None) -> dict:
        return {TAG: self.tag, "n": _enc(s.n, bufs)}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        return self.gym_type(_dec(node["n"], bufs))


class TextKind(Kind):
    tag = "gym.Text"

    def encode(self, s: Any, bufs: list | None) -> dict:
        return {
            TAG: self.tag,
            "min": s.min_length,
            "max": s.max_length,
            "charset": "".join(s.character_list),
        }

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        return self.gym_type(node["max"], min_length=node["min"], charset=node["charset"])


class TupleKind(Kind):
    tag = "gym.Tuple"

    def encode(self, s: Any, bufs: list | None) -> dict:
        return {TAG: self.tag, "v": [_enc(x, bufs) for x in s.spaces]}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        return self.gym_type(_dec_list_field(node, bufs))

    def children(self, s: Any) -> list[tuple[str, Any]]:
        return [(f".spaces[{i!r}]", x) for i, x in enumerate(s.spaces)]


class OneOfKind(TupleKind):
    """Like Tuple: a list of subspaces (gymnasium >= 1.0 only)."""

    tag = "gym.OneOf"


class DictKind(Kind):
    tag = "gym.Dict"

    def encode(self, s: Any, bufs: list | None) -> dict:
        return {TAG: self.tag, "v": [[_enc(k, bufs), _enc(v, bufs)] for k, v in s.spaces.items()]}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        return self.gym_type([(_dec(k, bufs), _dec(v, bufs)) for k, v in node["v"]])

    def children(self, s: Any) -> list[tuple[str, Any]]:
        return [(f".spaces[{k!r}]", v) for k, v in s.spaces.items()]


class SequenceKind(Kind):
    tag = "gym.Sequence"

    def encode(self, s: Any, bufs: list | None) -> dict:
        return {TAG: self.tag, "v": _enc(s.feature_space, bufs), "stack": bool(s.stack)}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        return self.gym_type(_space_field(node, bufs, "v"), stack=bool(node["stack"]))

    def children(self, s: Any) -> list[tuple[str, Any]]:
        return [(".feature_space", s.feature_space)]


class GraphKind(Kind):
    tag = "gym.Graph"

    def encode(self, s: Any, bufs: list | None) -> dict:
        return {TAG: self.tag, "nodes": _enc(s.node_space, bufs), "edges": _enc(s.edge_space, bufs)}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        edges = None if node["edges"] is None else _space_field(node, bufs, "edges")
        return self.gym_type(_space_field(node, bufs, "nodes"), edges)

    def children(self, s: Any) -> list[tuple[str, Any]]:
        return [(".node_space", s.node_space), (".edge_space", s.edge_space)]


class GraphInstanceKind(Kind):
    tag = "gym.GraphInstance"

    def encode(self, g: Any, bufs: list | None) -> dict:
        return {TAG: self.tag, "v": [_enc(x, bufs) for x in g]}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        return self.gym_type(*_dec_list_field(node, bufs))

    def children(self, g: Any) -> list[tuple[str, Any]]:
        return [(f"[{i}]", x) for i, x in enumerate(g)]


class _SpecKind(Kind):
    """A registration dataclass: its ``__init__`` fields, as a dict."""

    home = "registration"

    def encode(self, spec: Any, bufs: list | None) -> dict:
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.init}
        return {TAG: self.tag, "v": _enc_dict(portable_spec_fields(fields), bufs)}

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        return self.gym_type(**_dec(node["v"], bufs))

    def children(self, spec: Any) -> list[tuple[str, Any]]:
        return [(f".{f.name}", getattr(spec, f.name)) for f in dataclasses.fields(spec)]


class EnvSpecKind(_SpecKind):
    tag = "gym.EnvSpec"

    def decode(self, node: dict, bufs: Sequence | None) -> Any:
        spec = super().decode(node, bufs)
        spec.additional_wrappers = tuple(spec.additional_wrappers)
        return spec


class WrapperSpecKind(_SpecKind):
    tag = "gym.WrapperSpec"


_SPACES = (
    BoxKind(),
    DiscreteKind(),
    MultiDiscreteKind(),
    MultiBinaryKind(),
    TextKind(),
    TupleKind(),
    DictKind(),
    SequenceKind(),
    OneOfKind(),
    GraphKind(),
)
SPACE_NAMES = ", ".join(kind.name for kind in _SPACES)
_KINDS = (*_SPACES, GraphInstanceKind(), EnvSpecKind(), WrapperSpecKind())
_registered = False


def unsupported(t: type) -> str | None:
    """Why the gymnasium type ``t`` cannot be sent (a space we have no kind for), else None."""
    gym = sys.modules.get("gymnasium")
    if gym is not None and issubclass(t, gym.spaces.Space):
        name = f"{t.__module__}.{t.__qualname__}"
        return f"gymnasium space type {name} is not supported (supported: {SPACE_NAMES})"
    return None


def register() -> None:
    """Add every kind this gymnasium has to the core's tables, once; ImportError without gymnasium."""
    global _registered
    if _registered:
        return
    try:
        from gymnasium import spaces
        from gymnasium.envs import registration
    except ImportError as e:
        raise ImportError(f"a gymnasium value arrived but gymnasium cannot be imported here: {e}") from e
    homes = {"spaces": spaces, "registration": registration}
    for kind in _KINDS:
        gym_type = getattr(homes[kind.home], kind.name, None)
        if gym_type is not None:  # OneOf needs gymnasium >= 1.0
            kind.gym_type = gym_type
            _ENCODERS[gym_type] = kind.encode
            _DECODERS[kind.tag] = kind.decode
            _CHILDREN[gym_type] = kind.children
    _registered = True
