"""Turns Python, numpy and gymnasium values into strict JSON and back, exactly (type for type).

It runs on both sides of every env step, inside minimal images: stdlib + numpy only at import,
gymnasium imported lazily. Wire format (version ``WIRE_VERSION``):

* ``str``, finite ``float``, ``int`` (|x| < 10**600), ``bool``, ``None`` and ``list`` are
  themselves; a ``dict`` whose keys are all ``str`` (and none is ``"$"``) is a JSON object.
* Everything else is a JSON object tagged with the key ``"$"``: ``{"$": "t", "v": [...]}`` is a
  tuple, ``{"$": "d", "v": [[k, v], ...]}`` a dict with other keys (``"od"``: an OrderedDict),
  ``{"$": "nd", "d": "<f4", "s": [84, 84, 3], "b": base64}`` (or ``"i": buffer index``) a numpy
  array, ``{"$": "ns", ...}`` a numpy scalar, ``{"$": "gym.Box", ...}`` a gymnasium space, and so
  on (see ``core._DECODERS`` and the kinds in ``spaces``).

``encode_message`` frames a value as one binary message body (little endian)::

    <I json_len> <I n_buffers> n_buffers * <Q buffer_len>  JSON  (pad to 16) buf0 (pad) buf1 ...

Every buffer starts at an offset that is a multiple of 16 from the start of the body, so arrays
decoded in place from a fresh ``bytearray`` are aligned. The transport adds its own length prefix.

Modules: ``jsonfast`` (JSON text), ``core`` (values to trees and back, ``WIRE_VERSION``),
``spaces`` (gymnasium types), ``framing`` (binary message bodies).
"""

from __future__ import annotations

from . import spaces
from .core import INLINE_MAX, WIRE_VERSION, decode, dumps, encode, loads, plug_in_gymnasium
from .framing import decode_message, encode_message
from .spaces import OLD_SPEC_FIELDS, portable_spec_fields

plug_in_gymnasium(spaces)  # the module is core's GymnasiumTypes

__all__ = [
    "INLINE_MAX",
    "OLD_SPEC_FIELDS",
    "WIRE_VERSION",
    "decode",
    "decode_message",
    "dumps",
    "encode",
    "encode_message",
    "loads",
    "portable_spec_fields",
]
