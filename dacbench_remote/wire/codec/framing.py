"""Frames a value as one binary message body: the JSON tree plus its array and bytes payloads as
raw side buffers, each 16-byte aligned (layout in the package docstring), and reads it back."""

from __future__ import annotations

import struct
from typing import Any

from .core import decode, encode
from .jsonfast import json_text, parse_json

_ALIGN = 16
_MAX_PARTS = 64  # beyond this encode_message joins the parts (sendmsg accepts at most IOV_MAX)
_HEAD = struct.Struct("<II")
_PADDING = [bytes(n) for n in range(_ALIGN)]


def encode_message(obj: Any, *, root: str = "value") -> list[Any]:
    """Encode ``obj`` as one binary frame body, array payloads raw (no base64, no copy).

    Always returns a LIST of bytes-like objects (bytes / flat uint8 memoryviews, at most 64)
    whose concatenation is the body: write them with ``socket.sendmsg(parts)`` (looping on
    partial sends) or ``b"".join(parts)``. The memoryviews share memory with the arrays in
    ``obj``: send before mutating them.
    """
    bufs: list = []
    js = json_text(encode(obj, bufs, root=root)).encode("ascii")
    n = len(bufs)
    if not n:
        return [_HEAD.pack(len(js), 0) + js]
    lens = [len(b) for b in bufs]
    head = struct.pack(f"<II{n}Q", len(js), n, *lens) + js
    pad = -len(head) % _ALIGN
    parts: list[Any] = [head + _PADDING[pad]] if pad else [head]
    off = len(head) + pad
    last = n - 1
    for i, (b, size) in enumerate(zip(bufs, lens, strict=True)):
        parts.append(b)
        off += size
        pad = -off % _ALIGN
        if pad and i != last:
            parts.append(_PADDING[pad])
            off += pad
    if len(parts) > _MAX_PARTS:
        return [b"".join(parts)]
    return parts


def decode_message(payload: bytes | bytearray | memoryview, *, root: str = "value") -> Any:
    """Inverse of :func:`encode_message` for the joined body.

    With a writable payload (a fresh ``bytearray`` per message, e.g. filled by ``recv_into``)
    arrays are decoded in place without a copy and keep the payload alive: do not reuse that
    bytearray for the next message. A read-only payload (``bytes``) costs one copy per array.
    """
    if type(payload) is not bytes and type(payload) is not bytearray:
        payload = memoryview(payload)
        if payload.ndim != 1 or payload.format != "B":
            payload = payload.cast("B")
    total = len(payload)
    if total < 8:
        raise ValueError(f"malformed frame: {total} bytes is shorter than the 8-byte header")
    json_len, n = _HEAD.unpack_from(payload, 0)
    start = 8 + 8 * n
    end_json = start + json_len
    if end_json > total:
        raise ValueError(
            f"malformed frame: header announces {n} buffers and {json_len} bytes of JSON, "
            f"but the frame has only {total} bytes"
        )
    if not n and end_json != total:
        raise ValueError(f"malformed frame: {total - end_json} bytes after the JSON part")
    mv = memoryview(payload) if n else payload
    try:
        tree = parse_json(str(mv[start:end_json], "utf-8"))
    except ValueError as e:
        raise ValueError(f"malformed frame: the JSON part is not valid: {e}") from e
    if not n:
        return decode(tree, None, root=root)
    lens = struct.unpack_from(f"<{n}Q", mv, 8)
    off = end_json
    bufs = []
    for size in lens:
        off += -off % _ALIGN
        end = off + size
        if end > total:
            raise ValueError(
                f"malformed frame: buffer {len(bufs)} of {size} bytes ends at {end}, "
                f"past the end of the {total}-byte frame"
            )
        bufs.append(mv[off:end])
        off = end
    if off != total:
        raise ValueError(f"malformed frame: {total - off} bytes after the last buffer")
    return decode(tree, bufs, root=root)
