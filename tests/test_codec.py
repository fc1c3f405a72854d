"""Property tests of the wire codec: every supported value comes back exactly, on every path."""

from __future__ import annotations

import base64
import collections
import copy
import enum
import inspect
import json
import math
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dacbench_remote.testing import assert_identical
from dacbench_remote.wire import codec

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# the round-trip paths


def via_tree(x: Any) -> Any:
    return codec.decode(codec.encode(x))


def via_tree_and_buffers(x: Any) -> Any:
    buffers: list = []
    tree = codec.encode(x, buffers)
    # the tree alone must be strict JSON; the buffers travel beside it
    tree = json.loads(json.dumps(tree, allow_nan=False))
    return codec.decode(tree, buffers)


def via_text(x: Any) -> Any:
    return codec.loads(codec.dumps(x))


def via_message_bytes(x: Any) -> Any:
    return codec.decode_message(b"".join(codec.encode_message(x)))


def via_message_bytearray(x: Any) -> Any:
    return codec.decode_message(bytearray(b"".join(codec.encode_message(x))))


PATHS = [via_tree, via_tree_and_buffers, via_text, via_message_bytes, via_message_bytearray]


def assert_arrays_fresh(value: Any, path: str = "value") -> None:
    """Decoded arrays must be usable like any others: writable, C-contiguous, aligned."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        assert flags.writeable, f"{path} is read-only"
        assert flags.c_contiguous, f"{path} is not C-contiguous"
        assert flags.aligned, f"{path} is not aligned"
    elif isinstance(value, (list, tuple)):
        for i, x in enumerate(value):
            assert_arrays_fresh(x, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, x in value.items():
            assert_arrays_fresh(x, f"{path}[{k!r}]")


def assert_round_trips(x: Any) -> None:
    for path in PATHS:
        try:
            y = path(x)
            assert_identical(x, y)
            assert_arrays_fresh(y)
        except AssertionError as e:
            raise AssertionError(f"{path.__name__}: {e}") from e


def assert_strict_json(text: str) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant} in {text[:200]}")

    json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------------------------------
# strategies

DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.datetime64_dtypes(endianness="?"),
    hnp.unicode_string_dtypes(endianness="?", max_len=4),
    hnp.byte_string_dtypes(max_len=4),
)
LAYOUTS = ["c", "fortran", "reversed", "strided", "transposed", "readonly"]


def relayout(arr: np.ndarray, layout: str) -> np.ndarray:
    """The same values (or a view of them) in a memory layout the sender may hand us."""
    if layout == "fortran":
        return np.asfortranarray(arr)
    if layout == "reversed" and arr.ndim:
        return arr[(slice(None, None, -1),) * arr.ndim]
    if layout == "strided" and arr.ndim:
        return arr[(slice(None, None, 2),) * arr.ndim]
    if layout == "transposed":
        return arr.T
    if layout == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


@st.composite
def arrays(draw: st.DrawFn, max_side: int = 6) -> np.ndarray:
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=max_side))
    arr = draw(hnp.arrays(dtype, shape))
    return relayout(arr, draw(st.sampled_from(LAYOUTS)))


@st.composite
def numpy_scalars(draw: st.DrawFn) -> np.generic:
    arr = draw(hnp.arrays(draw(DTYPES), ()))
    return arr[()]


FLOATS = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324])
INTS = st.integers() | st.sampled_from([2**64, -(2**63) - 1, 10**700, -(10**700)])
SET_ELEMENTS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4)
HASHABLES = st.recursive(
    SET_ELEMENTS
    | FLOATS
    | st.binary(max_size=4)
    | st.builds(np.int64, st.integers(-(2**63), 2**63 - 1))
    | st.builds(np.float32, st.floats(width=32))
    | st.builds(np.bool_, st.booleans()),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(SET_ELEMENTS, max_size=3),
    max_leaves=5,
)
STR_KEYS = st.sampled_from(["$", "t", "v", "d", "nd", "__t__"]) | st.text(max_size=5)
LEAVES = (
    st.none()
    | st.booleans()
    | INTS
    | FLOATS
    | st.complex_numbers()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.binary(min_size=600, max_size=700)
    | st.binary(min_size=600, max_size=700).map(bytearray)
    | numpy_scalars()
    | arrays()
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(STR_KEYS, inner, max_size=4)
        | st.dictionaries(HASHABLES, inner, max_size=4)
        | st.sets(SET_ELEMENTS, max_size=4)
        | st.frozensets(SET_ELEMENTS, max_size=4)
        | st.binary(max_size=8).map(bytearray)
    ),
    max_leaves=12,
)

BOX_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.bool_]


@st.composite
def boxes(draw: st.DrawFn) -> spaces.Box:
    dtype = np.dtype(draw(st.sampled_from(BOX_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    if dtype.kind == "f":
        elements = st.floats(
            width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False, allow_subnormal=False
        )
    else:
        elements = None
    a = draw(hnp.arrays(dtype, shape, elements=elements))
    b = draw(hnp.arrays(dtype, shape, elements=elements))
    low, high = np.array(np.minimum(a, b)), np.array(np.maximum(a, b))
    if dtype.kind == "f" and draw(st.booleans()):
        low[...] = -np.inf  # unbounded below, as many observation spaces are
    try:
        return spaces.Box(low, high, shape=shape, dtype=dtype)
    except ValueError:
        assume(False)
        raise


DISCRETE_HAS_DTYPE = "dtype" in inspect.signature(spaces.Discrete.__init__).parameters


@st.composite
def discretes(draw: st.DrawFn) -> spaces.Discrete:
    n = draw(st.integers(1, 100))
    if not DISCRETE_HAS_DTYPE:  # gymnasium < 1.0
        return spaces.Discrete(n, start=draw(st.integers(-50, 50)))
    dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8]))
    start = draw(st.integers(0 if dtype is np.uint8 else -50, 50))
    return spaces.Discrete(n, start=start, dtype=dtype)


@st.composite
def multi_discretes(draw: st.DrawFn) -> spaces.MultiDiscrete:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    dtype = draw(st.sampled_from([np.int64, np.int32]))
    nvec = draw(hnp.arrays(dtype, shape, elements=st.integers(1, 9)))
    start = draw(hnp.arrays(dtype, shape, elements=st.integers(-5, 5)))
    return spaces.MultiDiscrete(nvec, dtype=dtype, start=start)


@st.composite
def texts(draw: st.DrawFn) -> spaces.Text:
    max_length = draw(st.integers(1, 12))
    chars = draw(st.lists(st.characters(), min_size=1, max_size=8, unique=True))
    charset = frozenset(chars) if draw(st.booleans()) else "".join(chars)
    return spaces.Text(max_length, min_length=draw(st.integers(0, max_length)), charset=charset)


BASE_SPACES = (
    boxes()
    | discretes()
    | multi_discretes()
    | st.integers(1, 6).map(spaces.MultiBinary)
    | hnp.array_shapes(min_dims=1, max_dims=3, max_side=3).map(spaces.MultiBinary)
    | texts()
)
GRAPH_PARTS = boxes() | discretes()
ONE_OF = getattr(spaces, "OneOf", None)  # gymnasium >= 1.0


def composite_spaces(inner: st.SearchStrategy) -> st.SearchStrategy:
    options = (
        st.lists(inner, max_size=3).map(spaces.Tuple)
        | st.lists(st.tuples(st.text(max_size=4), inner), min_size=1, max_size=3).map(
            lambda items: spaces.Dict(collections.OrderedDict(items))
        )
        | st.builds(spaces.Sequence, inner, stack=st.booleans())
        | st.builds(spaces.Graph, GRAPH_PARTS, st.none() | GRAPH_PARTS)
    )
    if ONE_OF is not None:
        options |= st.lists(inner, min_size=1, max_size=3).map(ONE_OF)
    return options


SPACES = st.recursive(BASE_SPACES, composite_spaces, max_leaves=6)

# --------------------------------------------------------------------------------------------
# round trips


@SETTINGS
@given(VALUES)
def test_values_round_trip_exactly_on_every_path(value: Any) -> None:
    assert_round_trips(value)


@SETTINGS
@given(arrays(max_side=9))
def test_arrays_of_every_dtype_and_layout_round_trip(arr: np.ndarray) -> None:
    assert_round_trips(arr)
    assert_round_trips({"obs": arr, "info": [arr, (arr,)]})


@SETTINGS
@given(numpy_scalars())
def test_numpy_scalars_keep_their_type(x: np.generic) -> None:
    assert_round_trips(x)


@settings(SETTINGS, max_examples=50)  # building gymnasium spaces is the slow part
@given(SPACES)
def test_spaces_round_trip_and_compare_equal(space: spaces.Space) -> None:
    for path in PATHS:
        back = path(space)
        assert type(back) is type(space)
        assert back == space
        assert_identical(space, back)
    assert_round_trips({"observation_space": space, "action_space": (space, [space])})


@SETTINGS
@given(VALUES)
def test_dumps_is_strict_json(value: Any) -> None:
    assert_strict_json(codec.dumps(value))
    buffers: list = []
    json.dumps(codec.encode(value, buffers), allow_nan=False)
    for b in buffers:
        assert len(memoryview(b).cast("B")) == len(b)  # flat bytes, len() is the byte count


@pytest.mark.parametrize(
    "value",
    [
        (np.zeros(4, np.float32), 1.0, False, False, {}),
        (np.zeros((84, 84, 3), np.uint8), 1.0, False, False, {}),
        (
            np.arange(9, dtype=np.float64),
            np.float64(0.81),
            False,
            False,
            {
                "raw_distances": [0.11, np.float64(0.77)],
                "weighted_distances": np.array([0.05, 0.38]),
            },
        ),
        {"action": {"step_size": np.float32(0.5), "choice": np.int64(2)}},
        [math.nan, -0.0, math.inf, -math.inf, 2**100, -(2**5000), 1e308, 5e-324],
        np.arange(60000, dtype=">f8").reshape(200, 300)[:, ::-2],  # big, non-contiguous
        np.asfortranarray(np.arange(3 * 4000, dtype=np.complex128).reshape(3, 4000)),
        np.zeros(3000, "M8[s]"),
        [np.ones(200, np.float64) * i for i in range(100)],  # many side buffers
        gym.spec("CartPole-v1"),
        spaces.GraphInstance(np.zeros((3, 2), np.float32), np.ones(2), np.array([[0, 1], [1, 2]])),
        spaces.GraphInstance(np.zeros(3, np.int64), None, None),
    ],
    ids=[
        "step",
        "image-step",
        "function-approximation-step",
        "dacbench-action",
        "special-numbers",
        "big-strided",
        "big-fortran-complex",
        "datetime",
        "many-arrays",
        "envspec",
        "graph-instance",
        "graph-instance-no-edges",
    ],
)
def test_known_values_round_trip(value: Any) -> None:
    assert_round_trips(value)


def test_arrays_never_travel_as_json_lists() -> None:
    array = np.arange(1000, dtype=np.uint8)
    tree = codec.encode(array)
    assert tree["$"] == "nd"
    assert base64.b64decode(tree["b"], validate=True) == array.tobytes()  # the raw bytes
    assert tree["d"] == "|u1"
    assert len(codec.dumps(np.zeros((84, 84, 3), np.uint8))) < 84 * 84 * 3 * 1.4


def test_gymnasium_values_with_tuples_round_trip_inside_envspec() -> None:
    # A copy: gym.spec() returns the registry's own object, which later tests make envs from.
    spec = copy.deepcopy(gym.spec("CartPole-v1"))
    spec.kwargs = {"render_mode": None, "sizes": (1, 2), 3: "x"}
    assert_round_trips(spec)


def test_loads_accepts_surrounding_whitespace() -> None:
    assert codec.loads(' \n{"a": [1, 2.5]}\n') == {"a": [1, 2.5]}


def test_str_dicts_are_plain_json_objects_in_order() -> None:
    value = {"b": 1, "a": [1.5, "x", None, True]}
    assert codec.dumps(value) == '{"b":1,"a":[1.5,"x",null,true]}'
    assert list(codec.loads(codec.dumps(value))) == ["b", "a"]


def test_keys_that_look_like_tags_are_escaped() -> None:
    value = {"$": "nd", "d": "<f4", "s": [1], "b": "AAAAAA=="}
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert type(back["s"]) is list


# --------------------------------------------------------------------------------------------
# buffers and frames


def test_small_payloads_inline_large_ones_go_to_buffers() -> None:
    small = np.zeros(codec.INLINE_MAX // 8, np.float64)
    large = np.zeros(codec.INLINE_MAX // 8 + 1, np.float64)
    buffers: list = []
    tree = codec.encode({"small": small, "large": large, "blob": bytes(10_000)}, buffers)
    assert "b" in tree["small"]
    assert tree["large"]["i"] == 0
    assert tree["blob"]["i"] == 1
    assert [len(b) for b in buffers] == [large.nbytes, 10_000]


def test_large_contiguous_arrays_are_not_copied_when_encoding() -> None:
    big = np.arange(100_000, dtype=np.float32)
    buffers: list = []
    codec.encode(big, buffers)
    assert np.shares_memory(np.frombuffer(buffers[0], np.uint8), big)


def test_dict_falling_back_to_pairs_keeps_buffers_consistent() -> None:
    big = np.arange(10_000, dtype=np.int64)
    value = {"first": big, 2: big * 2}  # the non-str key is found after big was encoded
    buffers: list = []
    tree = codec.encode(value, buffers)
    assert len(buffers) == 2
    assert_identical(value, codec.decode(tree, buffers))


def test_encode_message_layout_and_alignment() -> None:
    arrays_ = [np.arange(1000 + i, dtype=np.complex128) for i in range(3)]
    parts = codec.encode_message(arrays_)
    assert isinstance(parts, list)
    body = b"".join(parts)
    json_len, n = struct.unpack_from("<II", body)
    lens = struct.unpack_from(f"<{n}Q", body, 8)
    assert n == 3
    assert list(lens) == [a.nbytes for a in arrays_]
    tree = json.loads(body[8 + 8 * n : 8 + 8 * n + json_len])
    assert [node["i"] for node in tree] == [0, 1, 2]
    payload = bytearray(body)
    decoded = codec.decode_message(payload)
    assert_identical(arrays_, decoded)
    for a in decoded:
        assert np.shares_memory(a, np.frombuffer(payload, np.uint8))  # decoded in place
        assert (a.ctypes.data - np.frombuffer(payload, np.uint8).ctypes.data) % 16 == 0


def test_encode_message_bounds_the_number_of_parts() -> None:
    value = [np.ones(600, np.uint8) * i for i in range(200)]
    parts = codec.encode_message(value)
    assert len(parts) == 1
    assert_identical(value, codec.decode_message(parts[0]))


def test_decode_message_in_place_from_bytearray_and_copy_from_bytes() -> None:
    image = np.arange(84 * 84 * 3, dtype=np.uint32).reshape(84, 84, 3)
    body = b"".join(codec.encode_message({"obs": image}))
    payload = bytearray(body)
    in_place = codec.decode_message(payload)["obs"]
    assert np.shares_memory(in_place, np.frombuffer(payload, np.uint8))
    assert in_place.flags.writeable
    copied = codec.decode_message(body)["obs"]
    assert copied.flags.writeable
    copied[0, 0, 0] = 7  # must not touch the immutable bytes
    assert_identical(image, codec.decode_message(body)["obs"])


def test_decode_message_from_misaligned_memoryview_still_gives_aligned_arrays() -> None:
    value = np.arange(5000, dtype=np.float64)
    shifted = bytearray(b"x" + b"".join(codec.encode_message(value)))
    back = codec.decode_message(memoryview(shifted)[1:])
    assert back.flags.aligned
    assert_identical(value, back)


def test_message_crosses_a_real_unix_socket_with_sendmsg() -> None:
    value = (
        np.arange(84 * 84 * 3, dtype=np.uint8).reshape(84, 84, 3),
        np.float64(-1.5),
        False,
        True,
        {"weights": np.linspace(0, 1, 7000), ("k", 1): b"raw"},
    )
    parts = codec.encode_message(value)
    size = sum(len(p) for p in parts)
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        left.sendmsg([struct.pack("<Q", size), *parts])
        (length,) = struct.unpack("<Q", right.recv(8, socket.MSG_WAITALL))
        payload = bytearray(length)
        view = memoryview(payload)
        got = 0
        while got < length:
            got += right.recv_into(view[got:], length - got)
    finally:
        left.close()
        right.close()
    back = codec.decode_message(payload)
    assert_identical(value, back)
    assert_arrays_fresh(back)


# --------------------------------------------------------------------------------------------
# what cannot cross


class Opaque:
    pass


def test_unknown_type_names_type_and_path() -> None:
    with pytest.raises(TypeError) as info:
        codec.encode({"info": {"foo": [1, 2, Opaque()]}})
    message = str(info.value)
    assert "value['info']['foo'][2]" in message
    assert "test_codec.Opaque" in message


def test_unknown_type_path_uses_the_given_root_on_every_entry_point() -> None:
    value = (np.zeros(2), 0.0, False, False, {"foo": [1, 2, Opaque()]})
    for fn in (codec.encode, codec.dumps, codec.encode_message):
        with pytest.raises(TypeError, match=r"step\[4\]\['foo'\]\[2\]"):
            fn(value, root="step")


def test_unencodable_dict_key_is_named() -> None:
    with pytest.raises(TypeError, match=r"value\['a'\] \(the key .*Opaque"):
        codec.encode({"a": {Opaque(): 1}})


def test_unencodable_inside_a_dict_key_is_named() -> None:
    with pytest.raises(TypeError, match=r"value\['a'\] \(inside the key \(1, .*Opaque"):
        codec.encode({"a": {(1, Opaque()): 1}})


def test_object_arrays_are_refused_with_their_dtype() -> None:
    with pytest.raises(TypeError, match=r"value\[1\].*dtype object"):
        codec.encode([1, np.array([1, None], dtype=object)])


def test_structured_arrays_are_refused() -> None:
    with pytest.raises(TypeError, match="dtype"):
        codec.encode(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))


def test_array_subclasses_are_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"MaskedArray.*np\.asarray"):
        codec.encode({"x": np.ma.masked_array([1, 2])})


def test_builtin_subclasses_are_refused_rather_than_silently_changed() -> None:
    point = collections.namedtuple("Point", "x y")
    with pytest.raises(TypeError, match=r"value\[0\].*Point.*subclass of tuple"):
        codec.encode([point(1, 2)])
    with pytest.raises(TypeError, match=r"value\[0\].*defaultdict.*convert it to a plain dict"):
        codec.encode([collections.defaultdict(int, a=1)])
    with pytest.raises(TypeError, match=r"value\['mode'\].*Mode \(a subclass of int\)"):
        codec.encode({"mode": enum.IntEnum("Mode", "A B").A})


def test_ordered_dicts_come_back_as_ordered_dicts_in_order() -> None:
    # gymnasium 0.29's Dict.sample() returns them (DACBench 0.3.0's FunctionApproximation actions).
    value = collections.OrderedDict([("b", np.float32(1.5)), ("a", {1: (2,)}), (3, None)])
    for path in (via_tree, via_text, via_tree_and_buffers, via_message_bytes):
        back = path(value)
        assert type(back) is collections.OrderedDict
        assert list(back) == ["b", "a", 3]
        assert_identical(value, back)


def test_unsupported_space_types_are_named() -> None:
    class MySpace(spaces.Discrete):
        pass

    with pytest.raises(TypeError, match=r"value\.spaces\['b'\].*gymnasium space type.*MySpace"):
        codec.encode(spaces.Dict({"a": spaces.Discrete(2), "b": MySpace(3)}))


def test_envspec_with_callable_entry_point_is_refused() -> None:
    spec = gym.envs.registration.EnvSpec("Mine-v0", entry_point=lambda: None)
    with pytest.raises(TypeError, match=r"value\.entry_point.*function"):
        codec.encode(spec)


def test_reference_cycles_are_reported() -> None:
    value: list = [1]
    value.append(value)
    with pytest.raises(ValueError, match="reference cycle"):
        codec.encode(value)


def test_failed_encode_leaves_the_buffers_list_as_it_was() -> None:
    buffers: list = [b"before"]
    with pytest.raises(TypeError):
        codec.encode([np.zeros(10_000), Opaque()], buffers)
    assert buffers == [b"before"]


# --------------------------------------------------------------------------------------------
# malformed input

GOOD_ARRAY = {"$": "nd", "d": "<f4", "s": [1], "b": "AAAAAA=="}


@pytest.mark.parametrize(
    ("tree", "buffers", "expected"),
    [
        ({"$": "nope"}, None, r"at value: unknown tag 'nope'"),
        ({"obs": [1, {"$": "nope"}]}, None, r"at value\['obs'\]\[1\]: unknown tag"),
        ({"$": "t", "v": [0, {"$": 3}]}, None, r"at value\[1\]: unknown tag 3"),
        ({"$": "t"}, None, r"invalid 't' node: KeyError: 'v'"),
        ({"$": "t", "v": "abc"}, None, r"field 'v' must be a list"),
        ({"$": "f", "v": "1.5"}, None, r"'nan', 'inf' or '-inf'"),
        ({"$": "d", "v": [[1]]}, None, r"\[key, value\] pairs"),
        ({"$": "d", "v": [[[1, 2], 3]]}, None, r"unhashable type: 'list'"),
        ({"$": "int", "v": "xyz"}, None, r"invalid 'int' node"),
        ({**GOOD_ARRAY, "s": [3]}, None, r"cannot reshape array of size 1"),
        ({**GOOD_ARRAY, "s": [-1]}, None, r"invalid array shape \[-1\]"),
        ({**GOOD_ARRAY, "s": 5}, None, r"invalid 'nd' node: TypeError"),
        ({**GOOD_ARRAY, "d": "O"}, None, r"dtype 'O' is not allowed"),
        ({**GOOD_ARRAY, "d": "V8"}, None, r"dtype 'V8' is not allowed"),
        ({**GOOD_ARRAY, "d": "nonsense"}, None, r"invalid 'nd' node: TypeError: data type"),
        ({"$": "nd", "d": "<f4", "s": [1], "i": 0}, None, r"no buffers were given"),
        ({"$": "nd", "d": "<f4", "s": [1], "i": 2}, [b"1234"], r"buffer index 2 out of range"),
        ({"$": "nd", "d": "<f4", "s": [1], "i": -1}, [b"1234"], r"buffer index -1 out of range"),
        ({"$": "nd", "d": "<f4", "s": [2], "i": 0}, [b"12345"], r"invalid 'nd' node"),
        ({"$": "ns", "d": "<f4", "v": "abc"}, None, r"scalar value 'abc' is not a number"),
        ({"$": "ns", "d": "<f4", "v": [1]}, None, r"must be a JSON number"),
        ({"$": "ns", "d": "O", "v": 1}, None, r"not allowed on the wire"),
        ({"$": "ns", "d": "<i1", "v": 300}, None, r"invalid 'ns' node"),
        ({"$": "c", "v": ["a", 1.0]}, None, r"complex parts must be floats"),
        ({"$": "gym.Box", "d": "<f4", "s": [1], "lo": 1.0, "hi": 0.0}, None, r"gym\.Box"),
        ({"$": "gym.Sequence", "v": 3, "stack": False}, None, r"must be a gymnasium space"),
        ({"$": "gym.Discrete", "n": 0, "start": 0, "d": "<i8"}, None, r"'gym\.Discrete' node"),
        ((1, 2), None, r"tuple is not a JSON type"),
        ({"a": {1, 2}}, None, r"at value\['a'\]: set is not a JSON type"),
    ],
)
def test_malformed_trees_raise_value_error_naming_the_problem(
    tree: Any, buffers: list | None, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected) as info:
        codec.decode(tree, buffers)
    assert "malformed wire value" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "not valid wire JSON"),
        ("[1] [2]", "extra data"),
        ("", "not valid wire JSON"),
        (b"\xff\xfe", "not valid wire JSON"),
        ('{"x": NaN}', "NaN is not strict JSON"),
    ],
)
def test_loads_rejects_bad_text(text: str | bytes, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        codec.loads(text)


def _frame(tree: Any, buffers: list[bytes]) -> bytes:
    js = json.dumps(tree).encode()
    return struct.pack(f"<II{len(buffers)}Q", len(js), len(buffers), *map(len, buffers)) + js


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"123", "shorter than the 8-byte header"),
        (struct.pack("<II", 100, 0) + b"[]", "announces 0 buffers and 100 bytes of JSON"),
        (struct.pack("<II", 2, 0) + b"[]xx", "2 bytes after the JSON part"),
        (struct.pack("<II", 2, 0) + b"[x", "JSON part is not valid"),
        (struct.pack("<II", 2, 0) + b"\xff\xff", "JSON part is not valid"),
        (struct.pack("<II", 2, 2**31) + b"[]", "announces 2147483648 buffers"),
        (_frame([], [b"abcd"]), "buffer 0 of 4 bytes ends at"),
        (_frame([], [b""]) + bytes(64), "bytes after the last buffer"),
        (_frame({"$": "nope"}, []), "unknown tag 'nope'"),
    ],
)
def test_malformed_frames_raise_value_error_naming_the_problem(payload: bytes, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        codec.decode_message(payload)


def test_truncated_frames_raise_value_error() -> None:
    body = b"".join(codec.encode_message((np.zeros(1000), {"a": np.ones(300)})))
    for cut in range(0, len(body), 97):
        with pytest.raises(ValueError, match="malformed"):
            codec.decode_message(body[:cut])


JSON_LEAVES = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5) | st.text(max_size=3)
TAGS = st.sampled_from(
    [
        "t",
        "d",
        "f",
        "int",
        "nd",
        "ns",
        "b",
        "ba",
        "c",
        "set",
        "fset",
        "gym.Box",
        "gym.Discrete",
        "gym.MultiDiscrete",
        "gym.MultiBinary",
        "gym.Text",
        "gym.Tuple",
        "gym.Dict",
        "gym.Sequence",
        "gym.Graph",
        "gym.OneOf",
        "gym.GraphInstance",
        "gym.EnvSpec",
        "gym.WrapperSpec",
        "zzz",
    ]
)
FIELDS = st.sampled_from(
    [
        "v",
        "d",
        "s",
        "b",
        "i",
        "r",
        "n",
        "start",
        "lo",
        "hi",
        "nvec",
        "min",
        "max",
        "charset",
        "stack",
        "nodes",
        "edges",
    ]
)
JSON_TREES = st.recursive(
    JSON_LEAVES | st.sampled_from(["<f4", "|u1", "AAAA", "O", "nan"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(FIELDS, inner, max_size=4)
        | st.builds(
            lambda tag, fields: {"$": tag, **fields},
            TAGS,
            st.dictionaries(FIELDS, inner, max_size=5),
        )
    ),
    max_leaves=10,
)


@SETTINGS
@given(JSON_TREES, st.lists(st.binary(max_size=16), max_size=2))
def test_garbage_trees_decode_or_raise_value_error(tree: Any, buffers: list[bytes]) -> None:
    try:
        codec.decode(tree, buffers)
    except ValueError as e:
        assert "malformed wire value" in str(e)


@SETTINGS
@given(st.binary(max_size=64))
def test_garbage_frames_decode_or_raise_value_error(payload: bytes) -> None:
    try:
        codec.decode_message(payload)
    except ValueError as e:
        assert "malformed" in str(e)


REPO = Path(__file__).resolve().parent.parent
WITHOUT_GYMNASIUM = """
import sys
sys.modules["gymnasium"] = None  # any import of it now fails, as in an image without it
import numpy as np
from dacbench_remote.wire import codec
value = (np.zeros(4, np.float32), 1.0, False, False, {"d": np.float64(0.5), 1: (2, b"x")})
back = codec.decode_message(bytearray(b"".join(codec.encode_message(value))))
assert back[0].dtype == np.float32 and type(back[4]["d"]) is np.float64, back
try:
    codec.decode({"$": "gym.Discrete", "n": 3, "start": 0})
except ImportError as e:
    print("ImportError:", e)
"""


def test_codec_works_without_gymnasium_and_says_when_it_is_needed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_GYMNASIUM],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "a gymnasium value arrived but gymnasium cannot be imported here" in result.stdout


def test_a_tag_from_a_newer_sender_names_this_sides_wire_version() -> None:
    # The hello handshake compares WIRE_VERSION; a tag that slips past it says which side read it.
    expected = (rf"unknown tag 'nd2' \(sent by a newer dacbench-remote\? wire version here is "
                rf"{codec.WIRE_VERSION}\)")
    with pytest.raises(ValueError, match=expected):
        codec.decode({"$": "nd2", "d": "<f4", "s": [1], "b": "AAAAAA=="})
