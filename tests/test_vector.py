"""Unit tests of the vector env helpers: object arrays on the wire, info merging, modes."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dacbench_remote.errors import BadConfig
from dacbench_remote.host.vector import _merge_infos, autoreset_value
from dacbench_remote.testing import assert_identical
from dacbench_remote.wire import codec
from dacbench_remote.wire.object_arrays import pack_objects, unpack_objects
from tests.integration.test_vector import comparable


def test_object_arrays_cross_the_codec_and_come_back_as_object_arrays():
    final = np.full(3, None, dtype=object)
    final[1] = np.arange(4, dtype=np.float32)
    infos = {"final_obs": final, "_final_obs": np.array([False, True, False])}
    parts = codec.encode_message([True, pack_objects(infos)])
    sent = codec.decode_message(bytearray(b"".join(bytes(part) for part in parts)))[1]
    back = unpack_objects(sent)
    assert back["final_obs"].dtype == object and back["final_obs"].shape == (3,)
    assert back["final_obs"][0] is None
    assert back["final_obs"][1].dtype == np.float32
    assert np.array_equal(back["final_obs"][1], final[1])
    assert back["_final_obs"].dtype == np.bool_


def test_merged_infos_fill_missing_keys_as_sync_vector_env_does():
    first = {"x": np.array([1, 2]), "_x": np.array([True, True])}
    second = {"y": np.array([0.5]), "_y": np.array([True])}
    merged = _merge_infos([first, second], [2, 1])
    assert list(merged) == ["x", "_x", "y", "_y"]
    assert np.array_equal(merged["x"], np.array([1, 2, 0])) and merged["x"].dtype == first["x"].dtype
    assert merged["_x"].tolist() == [True, True, False]
    assert merged["y"].tolist() == [0.0, 0.0, 0.5]
    assert merged["_y"].tolist() == [False, False, True]


def test_autoreset_modes_by_name_or_enum_and_unknown_ones_refused():
    assert autoreset_value(AutoresetMode.SAME_STEP) == "SameStep"
    assert autoreset_value("Disabled") == "Disabled"
    with pytest.raises(BadConfig, match="NextStep, SameStep, Disabled"):
        autoreset_value("same_step")


class _InfoEnv(gymnasium.Env):
    """Reports `info` on reset: what a test gives each env."""

    observation_space = gymnasium.spaces.Discrete(2)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self, info: dict):
        self.info = info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, dict(self.info)


@pytest.mark.parametrize("counts", [[2, 3], [1, 2, 2], [4, 1]])
def test_infos_of_several_servers_merge_into_what_one_sync_vector_env_gives(counts):
    """Envs that report a key in different types (int, float, numpy float32, an object) or not
    at all, nested dicts included: the servers' SyncVectorEnvs merged equal one over all envs,
    which batches each key in the type of the first env that reports it."""
    infos = [{"score": 1, "nested": {"a": 1.5}}, {}, {"score": 2.75, "label": "x"},
             {"score": np.float32(0.25), "nested": {"b": np.arange(2)}}, {"label": 3}]

    def envs(selected):
        return SyncVectorEnv([lambda info=info: _InfoEnv(info) for info in selected])
    whole = envs(infos).reset()[1]
    starts = np.cumsum([0, *counts[:-1]]).tolist()
    shares = [envs(infos[start:start + count]).reset()[1]
              for start, count in zip(starts, counts, strict=True)]
    assert_identical(comparable(whole), comparable(_merge_infos(shares, counts)))
