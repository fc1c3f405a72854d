"""What crosses the wire does not depend on the gymnasium or numpy version of either side.

tests/data/wire_golden.json was encoded with gymnasium 1.4 + numpy 2.4 and is byte-identical to
what gymnasium 0.29.1 + numpy 1.26.4 (DACBench 0.3.0's pins) encode; the integration test
tests/integration/test_versions.py checks the old side against the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
from gymnasium.envs.registration import EnvSpec

from dacbench_remote.server import control
from dacbench_remote.testing import assert_identical
from dacbench_remote.wire import codec
from tests.wire_values import encoded, portable_values

GOLDEN = Path(__file__).parent / "data" / "wire_golden.json"
# What gymnasium 0.29.1's gym.make("CartPole-v1").spec.to_json() returns.
SPEC_JSON_029 = (
    '{"id": "CartPole-v1", "entry_point": "gymnasium.envs.classic_control.cartpole:CartPoleEnv", '
    '"reward_threshold": 475.0, "nondeterministic": false, "max_episode_steps": 500, '
    '"order_enforce": true, "autoreset": false, "disable_env_checker": false, '
    '"apply_api_compatibility": false, "kwargs": {}, "additional_wrappers": [], '
    '"vector_entry_point": "gymnasium.envs.classic_control.cartpole:CartPoleVectorEnv"}'
)


def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_this_side_encodes_exactly_the_golden_wire_values():
    assert encoded() == golden()


def test_the_golden_wire_values_decode_to_equal_values_type_for_type():
    decoded = codec.decode(golden())
    expected = portable_values()
    assert sorted(decoded) == sorted(expected)
    assert_identical(expected, {key: decoded[key] for key in expected})
    assert decoded["box"] == gymnasium.spaces.Box(-1.0, 2.0, (3,), np.float32)
    assert type(decoded["scalars"][0]) is np.int64 and type(decoded["scalars"][6]) is np.longlong


def test_scalar_tags_are_dtype_codes_that_name_the_same_type_on_every_numpy():
    tags = [node["d"] for node in golden()["scalars"]]
    assert tags == ["<i8", "<i4", "<f4", "<f8", "|b1", "|u1", "q", "<i4", "<f2", "U", "<c8", "<f8"]


def test_a_gymnasium_029_spec_is_read_by_this_gymnasium():
    fields = codec.portable_spec_fields(json.loads(SPEC_JSON_029))
    assert not set(codec.OLD_SPEC_FIELDS) & set(fields)
    spec = EnvSpec.from_json(json.dumps(fields))
    assert spec == gymnasium.make("CartPole-v1").spec


def test_old_spec_fields_that_are_set_are_kept_so_the_reader_refuses_rather_than_ignores_them():
    fields = codec.portable_spec_fields({"id": "X-v0", "autoreset": True,
                                         "apply_api_compatibility": False})
    assert fields == {"id": "X-v0", "autoreset": True}


def test_the_server_sends_a_spec_every_gymnasium_version_reads():
    text = control._portable_spec_json(gymnasium.make("CartPole-v1").spec)
    assert EnvSpec.from_json(text) == gymnasium.make("CartPole-v1").spec


class OldWrapper:
    """A gymnasium 0.29 wrapper as far as set_attr is concerned: no set_wrapper_attr."""

    def __init__(self, env, **own):
        self.env = env
        self.__dict__.update(own)

    @property
    def unwrapped(self):
        return self.env.unwrapped


class OldEnv:
    def __init__(self):
        self.instance = "inner"

    @property
    def unwrapped(self):
        return self


def test_set_attr_without_set_wrapper_attr_reaches_the_inner_env():
    inner = OldEnv()
    env = OldWrapper(OldWrapper(inner))
    control._set_attribute(env, "instance", "new")
    assert inner.instance == "new" and "instance" not in vars(env)


def test_set_attr_without_set_wrapper_attr_sets_a_wrappers_own_attribute_there():
    inner = OldEnv()
    middle = OldWrapper(inner, budget=3)
    control._set_attribute(OldWrapper(middle), "budget", 5)
    assert middle.budget == 5 and not hasattr(inner, "budget")
