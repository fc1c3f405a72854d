"""The client and the server's handlers together in one process (tests/inprocess.py): the same
trajectories as the env stepped directly, and every error kind raised as its class."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dacbench_remote import (
    BadConfig,
    EnvironmentClosed,
    ProtocolError,
    RemoteEnvironmentClient,
    RemoteError,
    UnknownBenchmark,
    UnsendableResult,
    VersionMismatch,
)
from dacbench_remote.server.data_channel import DataSession
from dacbench_remote.server.envs import create_env
from dacbench_remote.testing import assert_identical
from dacbench_remote.wire import (
    codec,
)
from dacbench_remote.wire.channel import LoopbackChannel
from dacbench_remote.wire.replies import error_from_payload
from tests.inprocess import InProcessConnection, InProcessServer
from tests.trajectories import record_trajectory


@pytest.fixture
def connection():
    return InProcessConnection(InProcessServer())


@pytest.mark.parametrize("target", ["gymnasium:CartPole-v1", "tests.envs:make_image_env"])
def test_trajectories_equal_the_env_stepped_directly(connection, target):
    remote = connection.make_env(target)
    assert isinstance(remote, RemoteEnvironmentClient)
    expected = record_trajectory(create_env(target), episodes=2, max_steps=50)
    assert_identical(expected, record_trajectory(remote, episodes=2, max_steps=50))


def test_the_in_process_env_passes_gymnasiums_checker(connection):
    check_env(connection.make_env("gymnasium:CartPole-v1"), skip_render_check=True)


def test_the_envs_own_exception_is_a_remote_error_and_the_env_stays_usable(connection):
    env = connection.make_env("tests.envs:make_image_env")
    env.reset(seed=0)
    with pytest.raises(RemoteError) as info:
        env.step(17)
    assert type(info.value) is RemoteError
    assert info.value.remote_type == "ValueError" and "invalid action 17" in str(info.value)
    assert "envs.py" in info.value.remote_traceback
    assert env.step(1)[1] == 1.0


def test_a_result_that_cannot_cross_is_unsendable_and_the_env_stays_usable(connection):
    env = connection.make_env("tests.envs:make_bad_replies_env")
    env.reset(seed=0)
    with pytest.raises(UnsendableResult, match=r"step\(\) returned a value that cannot be sent"):
        env.step(2)
    with pytest.raises(UnsendableResult, match=r"cannot encode render\(\) result\['frame'\]"):
        env.render()
    assert env.step(0)[4] == {"t": 2}


def test_a_space_that_cannot_cross_is_unsendable_and_named(connection):
    with pytest.raises(UnsendableResult, match=r"\['observation_space'\]"):
        connection.make_env("tests.envs:make_unsendable_space_env")


def test_an_env_closed_in_the_server_raises_environment_closed(connection):
    env = connection.make_env("tests.envs:make_counting_env")
    env.reset(seed=0)
    connection.close_env(env.env_id)
    with pytest.raises(EnvironmentClosed, match=rf"environment {env.env_id} is closed"):
        env.step(0.0)


def test_an_env_used_after_close_raises_environment_closed(connection):
    env = connection.make_env("tests.envs:make_counting_env")
    env.close()
    env.close()  # idempotent
    with pytest.raises(EnvironmentClosed, match=r"step\(\) on a closed remote environment"):
        env.step(0.0)
    with pytest.raises(EnvironmentClosed, match=r"render\(\) on a closed remote environment"):
        env.render()


def test_an_unknown_operation_is_a_protocol_error_and_the_env_stays_usable(connection):
    env = connection.make_env("tests.envs:make_counting_env")
    env.reset(seed=0)
    with pytest.raises(ProtocolError, match="unknown data-channel operation 'jump'"):
        env.exchange(["jump"])
    assert env.step(0.0)[4] == {"t": 1}


def test_a_greeting_naming_no_env_and_a_malformed_frame_are_protocol_errors(connection):
    session = DataSession(connection.server.runner.environments)
    channel = LoopbackChannel(session.answer)
    ok, payload = codec.decode_message(channel.receive(channel.send(codec.encode_message(
        {"env": "nope"}))))
    assert not ok and session.refused
    assert isinstance(error_from_payload(payload), ProtocolError)
    assert "no environment 'nope' on this server" in payload["message"]

    env = connection.make_env("tests.envs:make_counting_env")
    channel = LoopbackChannel(DataSession(connection.server.runner.environments).answer)
    greeting = channel.send(codec.encode_message({"env": env.env_id}))
    assert codec.decode_message(channel.receive(greeting)) == [True, None]
    ok, payload = codec.decode_message(channel.receive(channel.send([b"\x00garbage"])))
    assert not ok and isinstance(error_from_payload(payload), ProtocolError)


def test_a_missing_attribute_is_an_attribute_error(connection):
    env = connection.make_env("tests.envs:make_counting_env")
    with pytest.raises(AttributeError, match="the environment has no attribute 'no_such_thing'"):
        env.no_such_thing  # noqa: B018
    assert not hasattr(env, "no_such_thing")
    assert env.render_delay == 0.0  # a remote attribute


@pytest.mark.parametrize(("target", "kwargs", "error", "named"), [
    ("gymnasium:NoSuchEnv-v0", None, UnknownBenchmark, "NoSuchEnv-v0"),
    ("tests.envs:no_such_factory", None, UnknownBenchmark, "no_such_factory"),
    ("tests.envs:make_counting_env", {"bogus": 1}, BadConfig, "bogus"),
])
def test_refused_benchmarks_raise_their_class(connection, target, kwargs, error, named):
    with pytest.raises(error, match=named):
        connection.make_env(target, kwargs=kwargs)


def test_another_wire_version_is_refused_naming_both():
    with pytest.raises(VersionMismatch) as info:
        InProcessConnection(InProcessServer(), wire_version=codec.WIRE_VERSION + 1)
    assert f"client speaks version {codec.WIRE_VERSION + 1}" in str(info.value)
    assert f"speaks version {codec.WIRE_VERSION}" in str(info.value)


def test_vector_envs_step_in_process_too(connection):
    part = connection.make_vector_part(2, "NextStep", "gymnasium:CartPole-v1")
    observations, _ = part.exchange(["reset", 0, None])
    assert observations.shape == (2, 4)
    observations, rewards, *_ = part.exchange(["step", np.array([0, 1])])
    assert rewards.tolist() == [1.0, 1.0]


def test_a_vector_request_the_server_cannot_serve_is_bad_config(connection):
    with pytest.raises(BadConfig, match="the number of environments must be an int >= 1, not 0"):
        connection.make_vector_part(0, "NextStep", "gymnasium:CartPole-v1")
