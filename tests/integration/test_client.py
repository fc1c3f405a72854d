"""The remote env is a real gymnasium.Env: the checker passes, spaces and render match."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dacbench_remote import RemoteEnvironmentClient, RemoteRunner
from dacbench_remote.testing import assert_identical
from tests.envs import ImageEnv
from tests.needs import need_module
from tests.trajectories import make_local_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("target", ["gymnasium:CartPole-v1", "tests.envs:make_image_env"])
def test_gymnasium_env_checker_passes_on_remote_env(target):
    with RemoteRunner(target, runtime="local") as runner:
        env = runner.get_environment()
        assert isinstance(env, gymnasium.Env) and isinstance(env, RemoteEnvironmentClient)
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("target", ["Luby", "FunctionApproximation"])
def test_env_checker_gives_the_same_verdict_remote_as_in_process(target):
    """DACBench envs break their own spaces (e.g. float64 obs in a float32 Box): stay faithful."""
    need_module("dacbench")

    def verdict(env):
        try:
            check_env(env, skip_render_check=True)
        except AssertionError as exc:
            return str(exc)
        return "passed"

    expected = verdict(make_local_env(target))
    with RemoteRunner(target, runtime="local") as runner:
        assert verdict(runner.get_environment()) == expected


def test_spaces_metadata_and_spec_equal_the_real_envs():
    local = make_local_env("gymnasium:CartPole-v1")
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_environment()
        assert_identical(local.observation_space, remote.observation_space)
        assert_identical(local.action_space, remote.action_space)
        assert remote.metadata == local.metadata
        assert remote.spec.id == "CartPole-v1" and remote.spec.max_episode_steps == 500


def test_render_returns_the_envs_rgb_array_frame():
    local = ImageEnv(render_mode="rgb_array")
    local.reset(seed=3)
    local.step(2)
    with RemoteRunner("tests.envs:make_image_env", runtime="local",
                      kwargs={"render_mode": "rgb_array"}) as runner:
        remote = runner.get_environment()
        assert remote.render_mode == "rgb_array"
        remote.reset(seed=3)
        remote.step(2)
        frame = remote.render()
    assert frame.dtype == np.uint8 and frame.shape == (84, 84, 3)
    assert_identical(local.render(), frame)


def test_several_environments_in_one_server_are_independent():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        first, second = runner.get_environment(), runner.make_environment()
        assert first.env_id != second.env_id
        a, _ = first.reset(seed=1)
        b, _ = second.reset(seed=2)
        assert not np.array_equal(a, b)
        first.close()
        first.close()  # idempotent
        second.step(0)  # the other env is unaffected
        with pytest.raises(Exception, match="closed remote environment"):
            first.step(0)


def test_observations_are_writable_like_local_ones():
    with RemoteRunner("tests.envs:make_image_env", runtime="local") as runner:
        obs, _ = runner.get_environment().reset(seed=0)
    obs[0, 0, 0] = 7  # an agent may normalise in place, as it can with the local env
    assert obs.flags.writeable and obs[0, 0, 0] == 7


def test_server_sockets_are_private_to_the_user():
    import stat

    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        control = runner.server.socket_path
        data = control.with_name(control.name + ".data")
        for path in (control, data):
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(control.parent.stat().st_mode) == 0o700
