"""Turns Python and numpy values into JSON-able trees and back, exactly (type for type), through
two whitelists: ``_ENCODERS`` (by type) and ``_DECODERS`` (by tag), which ``spaces`` extends."""

from __future__ import annotations

import binascii
import collections
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .jsonfast import json_text, parse_json

WIRE_VERSION: int = 2
"""Bumped on every incompatible change of the format or of the data channel's frames (2: frames
carry a sequence number); client and server compare it at hello."""

TAG = "$"
# Python refuses int<->str conversions beyond sys.int_info (>= 640 digits when lowered by the
# user), so larger ints travel as hex strings.
_BIG_INT = 10**600
_ARRAY_KINDS = frozenset("biufcmMSU")

_b2a = binascii.b2a_base64
_a2b = binascii.a2b_base64
_SMALL_ARRAY = 8192  # bytes; below this a copy (tobytes) is cheaper than a memoryview
# Payloads up to this size are inlined as base64 even when buffers are collected: cheaper than
# a side-channel buffer (frame table, padding, a memoryview) for the tiny arrays of most steps.
INLINE_MAX = 512


class _Unencodable(Exception):
    """Internal: ``obj`` (somewhere inside the value) cannot be encoded, for ``reason``."""

    def __init__(self, obj: Any, reason: str):
        super().__init__(reason)
        self.obj = obj
        self.reason = reason


class _Malformed(Exception):
    """Internal: the wire ``node`` (somewhere inside the tree) is not valid, for ``reason``."""

    def __init__(self, node: Any, reason: str):
        super().__init__(reason)
        self.node = node
        self.reason = reason


# --------------------------------------------------------------------------------------------
# encoding


def _b64(data: Any) -> str:
    return _b2a(data, newline=False).decode("ascii")


def _nonfinite_name(x: float) -> str:
    if x != x:
        return "nan"
    return "inf" if x > 0 else "-inf"


def _enc(obj: Any, bufs: list | None) -> Any:
    t = type(obj)
    if t is str or t is bool or obj is None:
        return obj
    if t is float:
        if obj - obj == 0.0:  # finite
            return obj
        return {TAG: "f", "v": _nonfinite_name(obj)}
    if t is int:
        if -_BIG_INT < obj < _BIG_INT:
            return obj
        return {TAG: "int", "v": hex(obj)}
    f = _ENCODERS.get(t)
    if f is None:
        f = _resolve_encoder(t, obj)
    return f(obj, bufs)


_PLAIN = frozenset({str, bool, type(None)})


def _enc_list(obj: list, bufs: list | None) -> list:
    return [x if type(x) in _PLAIN else _enc(x, bufs) for x in obj]


def _enc_tuple(obj: tuple, bufs: list | None) -> dict:
    return {TAG: "t", "v": [x if type(x) in _PLAIN else _enc(x, bufs) for x in obj]}


def _enc_dict(obj: dict, bufs: list | None) -> dict:
    if TAG in obj:
        return _enc_pairs(obj, bufs)
    n = None if bufs is None else len(bufs)
    out = {}
    for k, v in obj.items():
        if type(k) is not str:
            if n is not None:
                del bufs[n:]  # drop what the values encoded so far appended
            return _enc_pairs(obj, bufs)
        out[k] = v if type(v) in _PLAIN else _enc(v, bufs)
    return out


def _enc_pairs(obj: dict, bufs: list | None) -> dict:
    return {TAG: "d", "v": [[_enc(k, bufs), _enc(v, bufs)] for k, v in obj.items()]}


def _enc_ordered_dict(obj: collections.OrderedDict, bufs: list | None) -> dict:
    # gymnasium < 1.0's Dict spaces sample (and envs built on them return) OrderedDicts.
    return {TAG: "od", "v": [[_enc(k, bufs), _enc(v, bufs)] for k, v in obj.items()]}


_ARRAY_CODES: dict[np.dtype, str] = {}


def _array_code(a: np.ndarray) -> str:
    """The wire dtype string of ``a`` (cached per dtype), or an error for object/record arrays."""
    dt = a.dtype
    if dt.kind not in _ARRAY_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise _Unencodable(
            a,
            f"numpy array of dtype {dt} cannot be sent (only bool, integer, float, complex, "
            "str, bytes and datetime dtypes can)",
        )
    if len(_ARRAY_CODES) < 512:
        _ARRAY_CODES[dt] = dt.str
    return dt.str


def _raw_bytes(a: np.ndarray) -> Any:
    """The array's bytes in C order: a copy when small, else a flat view (one copy at most)."""
    if a.nbytes <= _SMALL_ARRAY:
        return a.tobytes()
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    try:
        return memoryview(a).cast("B")
    except (ValueError, TypeError):  # e.g. datetime64 does not export the buffer protocol
        return a.reshape(-1).view(np.uint8)


def _enc_ndarray(a: np.ndarray, bufs: list | None) -> dict:
    code = _ARRAY_CODES.get(a.dtype)
    if code is None:
        code = _array_code(a)
    if bufs is None or a.nbytes <= INLINE_MAX:
        return {TAG: "nd", "d": code, "s": list(a.shape), "b": _b64(_raw_bytes(a))}
    bufs.append(_raw_bytes(a))
    return {TAG: "nd", "d": code, "s": list(a.shape), "i": len(bufs) - 1}


def _enc_bytes(obj: bytes, bufs: list | None) -> dict:
    if bufs is None or len(obj) <= INLINE_MAX:
        return {TAG: "b", "v": _b64(obj)}
    bufs.append(obj)
    return {TAG: "b", "i": len(bufs) - 1}


def _enc_bytearray(obj: bytearray, bufs: list | None) -> dict:
    if bufs is None or len(obj) <= INLINE_MAX:
        return {TAG: "ba", "v": _b64(obj)}
    bufs.append(obj)
    return {TAG: "ba", "i": len(bufs) - 1}


def _enc_complex(obj: complex, bufs: list | None) -> dict:
    return {TAG: "c", "v": [_enc(obj.real, None), _enc(obj.imag, None)]}


def _enc_set(obj: set, bufs: list | None) -> dict:
    return {TAG: "set", "v": [_enc(x, bufs) for x in obj]}


def _enc_frozenset(obj: frozenset, bufs: list | None) -> dict:
    return {TAG: "fset", "v": [_enc(x, bufs) for x in obj]}


def _scalar_code(tp: type) -> str:
    """A dtype string that maps back to exactly the scalar type ``tp`` (np.longlong vs int64)."""
    dt = np.dtype(tp)
    for code in (dt.str, dt.char):
        if np.dtype(code).type is tp:
            return code
    raise _Unencodable(None, f"numpy scalar type {tp.__name__} has no portable dtype code")


def _make_scalar_encoder(tp: type) -> Callable[[Any, list | None], Any]:
    """One encoder per numpy scalar type, with its dtype code computed once."""
    if tp is np.str_:
        return lambda x, bufs: {TAG: "ns", "d": "U", "v": str(x)}
    if tp is np.bytes_:
        return lambda x, bufs: {TAG: "ns", "d": "S", "b": _b64(x)}
    dt = np.dtype(tp)
    if dt.kind not in _ARRAY_KINDS:
        name = tp.__name__

        def refuse(x: Any, bufs: list | None) -> Any:
            raise _Unencodable(x, f"numpy scalar of type {name} cannot be sent")

        return refuse
    code = _scalar_code(tp)
    if dt.kind == "b":
        return lambda x, bufs: {TAG: "ns", "d": code, "v": bool(x)}
    if dt.kind in "iu":
        return lambda x, bufs: {TAG: "ns", "d": code, "v": int(x)}
    if dt.kind == "f" and dt.itemsize <= 8:

        def enc_float(x: Any, bufs: list | None) -> dict:
            v = float(x)
            return {TAG: "ns", "d": code, "v": v if v - v == 0.0 else _nonfinite_name(v)}

        return enc_float
    # complex, long double, datetime: the raw bytes are exact
    return lambda x, bufs: {TAG: "ns", "d": x.dtype.str, "r": _b64(x.tobytes())}


def _resolve_encoder(t: type, obj: Any) -> Callable[[Any, list | None], Any]:
    """Slow path for types not yet in the table: numpy scalars, gymnasium types, or an error."""
    if issubclass(t, np.generic):
        f = _make_scalar_encoder(t)
        _ENCODERS[t] = f
        return f
    if "gymnasium" in sys.modules:  # gymnasium values can only exist once it was imported
        _register_gymnasium()
        f = _ENCODERS.get(t)
        if f is not None:
            return f
    raise _Unencodable(obj, _unsupported_reason(t))


class GymnasiumTypes(Protocol):
    """gymnasium's types, which join the tables on first need (``spaces``, plugged in by the
    package's ``__init__``: it imports this module, so this module cannot import it)."""

    def register(self) -> None:
        """Add the types to the tables, once; ImportError when gymnasium is missing here."""

    def unsupported(self, t: type) -> str | None:
        """Why a gymnasium type ``t`` cannot be sent, or None if ``t`` is no gymnasium space."""


_gymnasium: GymnasiumTypes | None = None


def plug_in_gymnasium(types: GymnasiumTypes) -> None:
    """Let gymnasium's types join the tables when a gymnasium value first shows up."""
    global _gymnasium
    _gymnasium = types


def _register_gymnasium() -> None:
    if _gymnasium is None:
        raise ImportError("gymnasium's types are not plugged into the codec (import "
                          "dacbench_remote.wire.codec, not only its core)")
    _gymnasium.register()


def _unsupported_reason(t: type) -> str:
    name = f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__
    if issubclass(t, np.ndarray):
        return f"numpy array subclass {name} cannot be sent; convert it with np.asarray()"
    reason = _gymnasium.unsupported(t) if _gymnasium is not None else None
    if reason is not None:
        return reason
    for base in (bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset):
        if issubclass(t, base):
            return (
                f"type {name} (a subclass of {base.__name__}) cannot be sent exactly; "
                f"convert it to a plain {base.__name__}"
            )
    return (
        f"type {name} cannot be sent (supported: None, bool, int, float, complex, str, "
        "bytes, list, tuple, dict, set, numpy arrays and scalars, gymnasium spaces)"
    )


_ENCODERS: dict[type, Callable[[Any, list | None], Any]] = {
    list: _enc_list,
    tuple: _enc_tuple,
    dict: _enc_dict,
    np.ndarray: _enc_ndarray,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    complex: _enc_complex,
    set: _enc_set,
    frozenset: _enc_frozenset,
    collections.OrderedDict: _enc_ordered_dict,
}

# (path segment, child) listings of the types ``spaces`` registers, for naming error paths.
_CHILDREN: dict[type, Callable[[Any], list[tuple[str, Any]]]] = {}


def _children(obj: Any) -> list[tuple[str, Any, bool]]:
    """(path segment, child, is_key) for the containers the encoder descends into."""
    t = type(obj)
    if t is dict:
        out = []
        for k, v in obj.items():
            out.append((f"[{k!r}]", k, True))
            out.append((f"[{k!r}]", v, False))
        return out
    if t is list or t is tuple:
        return [(f"[{i}]", x, False) for i, x in enumerate(obj)]
    if t is set or t is frozenset:
        return [(f"<element {x!r}>", x, False) for x in obj]
    listing = _CHILDREN.get(t)
    if listing is None:
        return []
    return [(segment, child, False) for segment, child in listing(obj)]


def _locate(obj: Any, target: Any, path: str, depth: int = 0) -> str | None:
    """Path of the first occurrence of ``target`` (by identity) in ``obj``, in encoding order."""
    if obj is target:
        return path
    if depth > 200:
        return None
    for segment, child, is_key in _children(obj):
        if is_key:
            if child is target:
                return f"{path} (the key {child!r})"
            found = _locate(child, target, f"{path} (inside the key {child!r})", depth + 1)
        else:
            found = _locate(child, target, path + segment, depth + 1)
        if found is not None:
            return found
    return None


def encode(obj: Any, buffers: list | None = None, *, root: str = "value") -> Any:
    """Turn ``obj`` into a JSON-able tree (dict/list/str/int/float/bool/None only).

    With ``buffers`` (a list), array and bytes payloads larger than ``INLINE_MAX`` bytes are
    appended to it as flat bytes-like objects, possibly sharing memory with the arrays (send
    them before mutating those), and referenced by index; smaller ones and all payloads
    without ``buffers`` are inlined as base64. Raises ``TypeError`` naming the
    type and its path inside the value (``root`` names the top) for anything that cannot cross.
    """
    n = None if buffers is None else len(buffers)
    try:
        return _enc(obj, buffers)
    except _Unencodable as e:
        if n is not None:
            del buffers[n:]
        where = _locate(obj, e.obj, root) if e.obj is not None else None
        where = where or f"somewhere inside {root}"
        raise TypeError(f"cannot encode {where}: {e.reason}") from None
    except RecursionError:
        if n is not None:
            del buffers[n:]
        cycle = _cycle_at(obj, root)
        if cycle is not None:
            raise ValueError(
                f"cannot encode {root}: {cycle} refers back to a container it sits in (a "
                "reference cycle); break the cycle or send a copy without it"
            ) from None
        raise ValueError(
            f"cannot encode {root}: it is nested too deeply or contains a reference cycle"
        ) from None


def _cycle_at(obj: Any, path: str, inside: frozenset = frozenset(), depth: int = 0) -> str | None:
    """Path of the first place where ``obj`` refers back to a container it is inside, if any."""
    if id(obj) in inside:
        return path
    if depth > 200:
        return None
    inside = inside | {id(obj)}
    for segment, child, is_key in _children(obj):
        found = _cycle_at(child, path + ("" if is_key else segment), inside, depth + 1)
        if found is not None:
            return found
    return None


def dumps(obj: Any, *, root: str = "value") -> str:
    """Strict JSON text for ``obj`` (no NaN/Infinity literals); arrays inline as base64."""
    return json_text(encode(obj, None, root=root))


# --------------------------------------------------------------------------------------------
# decoding

_ATOMS = frozenset({str, int, float, bool, type(None)})


def _dec(node: Any, bufs: Sequence | None) -> Any:
    t = type(node)
    if t is dict:
        if TAG not in node:
            return {k: v if type(v) in _ATOMS else _dec(v, bufs) for k, v in node.items()}
        tag = node[TAG]
        f = _DECODERS.get(tag) if type(tag) is str else None
        if f is None:
            f = _unknown_tag(node, tag)
        try:
            return f(node, bufs)
        except _Malformed:
            raise
        except Exception as e:  # any failure inside one tagged node is a malformed node
            raise _Malformed(node, f"invalid {tag!r} node: {type(e).__name__}: {e}") from e
    if t is list:
        return [x if type(x) in _ATOMS else _dec(x, bufs) for x in node]
    if t in _ATOMS:
        return node
    raise _Malformed(node, f"{t.__name__} is not a JSON type")


def _unknown_tag(node: dict, tag: Any) -> Callable[[dict, Sequence | None], Any]:
    if type(tag) is str and tag.startswith("gym."):
        _register_gymnasium()  # ImportError when gymnasium is missing here
        f = _DECODERS.get(tag)
        if f is not None:
            return f
    raise _Malformed(
        node,
        f"unknown tag {tag!r} (sent by a newer dacbench-remote? wire version here is {WIRE_VERSION})",
    )


def _dec_list_field(node: dict, bufs: Sequence | None) -> list:
    v = node["v"]
    if type(v) is not list:
        raise _Malformed(node, f"field 'v' must be a list, got {type(v).__name__}")
    return [x if type(x) in _ATOMS else _dec(x, bufs) for x in v]


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _dec_float(node: dict, bufs: Sequence | None) -> float:
    v = node["v"]
    if type(v) is float:
        return v
    try:
        return _NONFINITE[v]
    except (KeyError, TypeError):
        raise _Malformed(node, f"'f' value must be 'nan', 'inf' or '-inf', got {v!r}") from None


def _dec_int(node: dict, bufs: Sequence | None) -> int:
    return int(node["v"], 16)


def _dec_pairs(node: dict, bufs: Sequence | None) -> dict:
    out = {}
    for pair in node["v"]:
        if type(pair) is not list or len(pair) != 2:
            raise _Malformed(node, f"dict items must be [key, value] pairs, got {pair!r}")
        out[_dec(pair[0], bufs)] = _dec(pair[1], bufs)
    return out


_DTYPES: dict[str, np.dtype] = {}


def _dtype(code: Any) -> np.dtype:
    dt = _DTYPES.get(code) if type(code) is str else None
    if dt is None:
        if type(code) is not str:
            raise ValueError(f"dtype must be a string, got {code!r}")
        dt = np.dtype(code)
        if dt.kind not in _ARRAY_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise ValueError(f"dtype {code!r} is not allowed on the wire")
        if len(_DTYPES) < 512:
            _DTYPES[code] = dt
    return dt


def _buffer(node: dict, bufs: Sequence | None) -> Any:
    i = node["i"]
    if bufs is None:
        raise _Malformed(node, f"refers to buffer {i!r} but no buffers were given")
    if type(i) is not int or not 0 <= i < len(bufs):
        raise _Malformed(node, f"buffer index {i!r} out of range (have {len(bufs)} buffers)")
    return bufs[i]


def _dec_ndarray(node: dict, bufs: Sequence | None) -> np.ndarray:
    code = node["d"]
    dt = _DTYPES.get(code)
    if dt is None:
        dt = _dtype(code)
    shape = tuple(node["s"])
    if "i" in node:
        arr = np.frombuffer(_buffer(node, bufs), dt)
        flags = arr.flags
        if not (flags.writeable and flags.aligned):
            arr = arr.copy()
    else:
        arr = np.frombuffer(bytearray(_a2b(node["b"])), dt)  # writable and malloc-aligned
    arr = arr.reshape(shape)  # ValueError when the byte count does not match the shape
    if arr.shape != shape:  # reshape accepted a -1
        raise _Malformed(node, f"invalid array shape {list(shape)}")
    return arr


_SCALAR_TYPES: dict[str, type] = {}


def _dec_npscalar(node: dict, bufs: Sequence | None) -> Any:
    code = node["d"]
    tp = _SCALAR_TYPES.get(code) if type(code) is str else None
    if tp is None:
        tp = np.dtype(code).type
        if not issubclass(tp, (np.bool_, np.number, np.str_, np.bytes_, np.datetime64, np.timedelta64)):
            raise ValueError(f"scalar type {code!r} is not allowed on the wire")
        if len(_SCALAR_TYPES) < 512:
            _SCALAR_TYPES[code] = tp
    if "v" in node:
        v = node["v"]
        if type(v) not in _ATOMS or v is None:
            raise ValueError(f"scalar value must be a JSON number, bool or string, got {v!r}")
        if type(v) is str and tp is not np.str_ and v not in _NONFINITE:
            raise ValueError(f"scalar value {v!r} is not a number")
        x = tp(v)
        if type(v) is int and x != v:  # numpy < 2 wraps out-of-range ints silently
            raise ValueError(f"scalar value {v} does not fit {code}")
        return x
    if "b" in node:
        return tp(_a2b(node["b"]))
    return np.frombuffer(_a2b(node["r"]), _dtype(code))[0]


def _dec_bytes(node: dict, bufs: Sequence | None) -> bytes:
    if "i" in node:
        return bytes(_buffer(node, bufs))
    return _a2b(node["v"])


def _dec_complex(node: dict, bufs: Sequence | None) -> complex:
    re, im = _dec_list_field(node, bufs)
    if type(re) is not float or type(im) is not float:
        raise ValueError("complex parts must be floats")
    return complex(re, im)


def _dec_tuple(node: dict, bufs: Sequence | None) -> tuple:
    v = node["v"]
    if type(v) is not list:
        raise _Malformed(node, f"field 'v' must be a list, got {type(v).__name__}")
    return tuple([x if type(x) in _ATOMS else _dec(x, bufs) for x in v])


_DECODERS: dict[str, Callable[[dict, Sequence | None], Any]] = {
    "t": _dec_tuple,
    "d": _dec_pairs,
    "f": _dec_float,
    "int": _dec_int,
    "nd": _dec_ndarray,
    "ns": _dec_npscalar,
    "b": _dec_bytes,
    "ba": lambda node, bufs: bytearray(_buffer(node, bufs) if "i" in node else _a2b(node["v"])),
    "c": _dec_complex,
    "set": lambda node, bufs: set(_dec_list_field(node, bufs)),
    "fset": lambda node, bufs: frozenset(_dec_list_field(node, bufs)),
    "od": lambda node, bufs: collections.OrderedDict(_dec_pairs(node, bufs)),
}


def _tree_children(node: Any) -> list[tuple[str, Any]]:
    """(path segment, child) pairs of a wire tree, described in terms of the decoded value."""
    if type(node) is list:
        return [(f"[{i}]", x) for i, x in enumerate(node)]
    if type(node) is not dict:
        return []
    if TAG not in node:
        return [(f"[{k!r}]", v) for k, v in node.items()]
    tag, v = node[TAG], node.get("v")
    if tag == "d" and type(v) is list:
        out = []
        for i, pair in enumerate(v):
            out.append((f"<key #{i}>", pair))
            if type(pair) is list and len(pair) == 2:
                out.extend([(f"<key #{i}>", pair[0]), (f"<value #{i}>", pair[1])])
        return out
    if type(v) is list:
        return [(f"[{i}]", x) for i, x in enumerate(v)]
    return [(f".{k}", x) for k, x in node.items() if k != TAG]


def _locate_node(tree: Any, target: Any, path: str, depth: int = 0) -> str | None:
    if tree is target:
        return path
    if depth > 200:
        return None
    for segment, child in _tree_children(tree):
        found = _locate_node(child, target, path + segment, depth + 1)
        if found is not None:
            return found
    return None


def decode(
    tree: Any,
    buffers: Sequence[bytes | bytearray | memoryview] | None = None,
    *,
    root: str = "value",
) -> Any:
    """Inverse of :func:`encode`: rebuild the value, type for type.

    Arrays come back C-contiguous, aligned and writable; they share memory with writable
    ``buffers`` (copied from read-only ones). Raises ``ValueError`` naming the place of any
    malformed node.
    """
    try:
        return _dec(tree, buffers)
    except _Malformed as e:
        where = _locate_node(tree, e.node, root) or f"somewhere inside {root}"
        raise ValueError(f"malformed wire value at {where}: {e.reason}") from e.__cause__
    except RecursionError:
        raise ValueError(f"malformed wire value {root}: nested too deeply") from None


def loads(text: str | bytes | bytearray, *, root: str = "value") -> Any:
    """Inverse of :func:`dumps`."""
    try:
        if type(text) is not str:
            text = str(text, "utf-8")
        tree = parse_json(text.strip(" \t\n\r"))
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"not valid wire JSON: {e}") from e
    return decode(tree, None, root=root)

