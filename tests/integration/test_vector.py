"""RemoteVectorEnv through real servers (local runtime) equals in-process SyncVectorEnv exactly."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from gymnasium.vector import SyncVectorEnv

from dacbench_remote import RemoteRunner
from dacbench_remote.errors import ServerCrashed
from dacbench_remote.server.envs import seed_global_rngs
from dacbench_remote.testing import assert_identical
from tests.envs import make_odd_info_env
from tests.needs import need_module
from tests.trajectories import make_local_env

pytestmark = pytest.mark.integration

MODES = ["NextStep", "SameStep", "Disabled"]


def comparable(value):
    """Object arrays (final_obs) as tagged lists: assert_identical compares numeric arrays."""
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(comparable(item) for item in value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return ("object array", value.shape, [comparable(item) for item in value.tolist()])
    return value


def record_vector(env, *, seed: int = 7, steps: int = 60) -> list:
    """reset(seed), then batched steps with actions from the seeded batched action space."""
    env.action_space.seed(seed)
    seed_global_rngs(seed)  # what the server does on reset, for benchmarks using global RNGs
    record = [("reset", env.reset(seed=seed))]
    for _ in range(steps):
        actions = env.action_space.sample()
        result = env.step(actions)
        record.append(("step", actions, result))
        if env.metadata["autoreset_mode"].value == "Disabled" and (result[2] | result[3]).any():
            seed_global_rngs(seed + 100)
            record.append(("reset", env.reset(seed=seed + 100)))
    return comparable(record)


@pytest.mark.parametrize("servers", [1, 2])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", ["Luby", "FunctionApproximation", "gymnasium:CartPole-v1"])
def test_vector_trajectory_is_identical_to_sync_vector_env(target, mode, servers):
    if not target.startswith("gymnasium:"):
        need_module("dacbench")
    local = SyncVectorEnv([lambda: make_local_env(target)] * 4, autoreset_mode=mode)
    expected = record_vector(local)
    local.close()
    with RemoteRunner(target, runtime="local") as runner:
        remote = runner.get_vector_environment(4, autoreset_mode=mode, servers=servers)
        assert remote.single_observation_space == local.single_observation_space
        assert remote.observation_space == local.observation_space
        assert remote.action_space == local.action_space
        actual = record_vector(remote)
        remote.close()
    assert len(actual) == len(expected) > 10
    assert_identical(expected, actual, path=f"{target} {mode} K={servers}")


def test_same_step_autoreset_carries_final_observations():
    local = SyncVectorEnv([lambda: make_local_env("gymnasium:CartPole-v1")] * 3,
                          autoreset_mode="SameStep")
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(3, autoreset_mode="SameStep", servers=2)
        for env in (local, remote):
            env.reset(seed=0)
        for _ in range(200):
            actions = np.ones(3, dtype=np.int64)
            want, got = local.step(actions), remote.step(actions)
            assert_identical(comparable(want), comparable(got))
            if "final_obs" in got[4]:
                break
        assert got[4]["final_obs"].dtype == object
        assert got[4]["_final_obs"].any()
        remote.close()


def test_wrong_action_shape_is_a_clear_error_and_the_env_stays_usable():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(4)
        remote.reset(seed=0)
        with pytest.raises(ValueError, match=r"shape \(3,\).*batch of shape \(4,\)"):
            remote.step(np.zeros(3, dtype=np.int64))
        observations, *_ = remote.step(np.zeros(4, dtype=np.int64))
        assert observations.shape == (4, 4)
        remote.close()


def test_get_attr_call_set_attr_and_idempotent_close():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(3, servers=2)
        remote.reset(seed=1)
        assert remote.get_attr("spec")[0].id == "CartPole-v1"
        remote.set_attr("marker", [1, 2, 3])
        assert remote.get_attr("marker") == (1, 2, 3)
        assert len(remote.call("render")) == 3
        remote.close()
        remote.close()
        assert remote.closed


def test_killed_server_mid_batch_raises_server_crashed():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(2)
        remote.reset(seed=0)
        os.kill(runner.connection.server_facts["pid"], signal.SIGKILL)
        with pytest.raises(ServerCrashed):
            remote.step(np.zeros(2, dtype=np.int64))
        remote.close()


DRIVER = '''
import pickle, sys
import numpy as np
from dacbench_remote import RemoteRunner
target, image, mode, out = sys.argv[1:5]
with RemoteRunner(target, runtime="bwrap", image=image) as runner:
    envs = runner.get_vector_environment(3, autoreset_mode=mode, servers=2)
    envs.action_space.seed(7)
    record = [("reset", envs.reset(seed=7))]
    for _ in range(40):
        actions = envs.action_space.sample()
        record.append(("step", actions, envs.step(actions)))
    envs.close()
with open(out, "wb") as handle:
    pickle.dump(record, handle)
'''


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_vector_env_in_image_via_bwrap_as_unprivileged_user(
    mode, base_image, unprivileged_user, user_python
):
    import pickle
    import shutil
    import tempfile
    from pathlib import Path

    from tests.conftest import SHARED_DIR, run_as

    need_module("dacbench")
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="vector-", dir=SHARED_DIR))
    try:
        (directory / "driver.py").write_text(DRIVER)
        shutil.chown(directory, unprivileged_user)
        os.chmod(directory, 0o755)
        out = directory / "record.pickle"
        done = run_as(unprivileged_user, [user_python, str(directory / "driver.py"), "Luby",
                                          str(base_image), mode, str(out)],
                      cwd=str(directory), timeout=300)
        assert done.returncode == 0, f"as {unprivileged_user}:\n{done.stderr[-3000:]}"
        with open(out, "rb") as handle:
            actual = comparable(pickle.load(handle))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    local = SyncVectorEnv([lambda: make_local_env("Luby")] * 3, autoreset_mode=mode)
    local.action_space.seed(7)
    expected = [("reset", local.reset(seed=7))]
    for _ in range(40):
        actions = local.action_space.sample()
        expected.append(("step", actions, local.step(actions)))
    local.close()
    assert_identical(comparable(expected), actual, path=f"Luby {mode} in image")


def test_closing_leaves_no_server_processes_or_sockets():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(4, servers=2)
        remote.reset(seed=0)
        extra = remote.extra_runners
        servers = [runner.server, *(other.server for other in extra)]
        paths = [server.socket_path for server in servers]
        assert len(servers) == 2 and all(server.alive() for server in servers)
        remote.close()
        assert not extra[0].server  # the extra server is stopped with the vector env
    assert not any(server.alive() for server in servers)
    assert not any(os.path.exists(path) or os.path.exists(f"{path}.data") for path in paths)


@pytest.mark.parametrize("servers", [1, 2])
def test_per_env_seed_lists_and_calls_on_some_envs_match_sync_vector_env(servers):
    seeds = [5, None, 11]
    local = SyncVectorEnv([lambda: make_local_env("gymnasium:CartPole-v1")] * 3)
    expected = comparable(local.reset(seed=seeds))
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(3, servers=servers)
        observations, infos = remote.reset(seed=seeds)
        assert_identical(comparable((observations[[0, 2]], infos)),
                         comparable((expected[0][[0, 2]], expected[1])))
        with pytest.raises(ValueError, match="2 seeds for 3 environments"):
            remote.reset(seed=[1, 2])
        remote.set_attr_at([2, 0], "marker", ["two", "zero"])
        assert remote.call_at([2, 0], "get_wrapper_attr", "marker") == ("two", "zero")
        assert_identical(remote.call_at([1], "reset", seed=3)[0][0],
                         local.envs[1].reset(seed=3)[0])
        with pytest.raises(IndexError, match="out of range"):
            remote.call_at([3], "reset")
        with pytest.raises(ValueError, match="2 values for 1 indices"):
            remote.set_attr_at([1], "marker", [1, 2])
        remote.close()
    local.close()


def record_partial_resets(env, *, steps: int = 40, tag: bool = False) -> list:
    """Seeded batched actions; in mode "Disabled", the envs that ended are reset alone
    (options["reset_mask"]) with seeds 10*t + i; `tag` passes an option of length N too."""
    n = env.num_envs

    def options(**more):  # a new dict each time: gymnasium pops reset_mask from the one given
        return {**({"tag": np.arange(n) * 1.5} if tag else {}), **more} or None

    env.action_space.seed(3)
    record = [("reset", env.reset(seed=0, options=options()))]
    for t in range(1, steps + 1):
        actions = env.action_space.sample()
        result = env.step(actions)
        record.append(("step", actions, result))
        ended = result[2] | result[3]
        if env.metadata["autoreset_mode"].value == "Disabled" and ended.any():
            record.append(("reset", ended,
                           env.reset(seed=10 * t, options=options(reset_mask=ended.copy()))))
    return comparable(record)


@pytest.mark.parametrize("servers", [2, 3])
def test_partial_reset_in_disabled_mode_equals_sync_vector_env(servers):
    local = SyncVectorEnv([lambda: make_local_env("gymnasium:CartPole-v1")] * 5,
                          autoreset_mode="Disabled")
    expected = record_partial_resets(local, steps=80)
    local.close()
    partial = [step for step in expected if step[0] == "reset" and len(step) == 3]
    assert any(not step[1].all() for step in partial), "no reset of only some envs happened"
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(5, autoreset_mode="Disabled", servers=servers)
        actual = record_partial_resets(remote, steps=80)
        remote.close()
    assert_identical(expected, actual, path=f"CartPole Disabled K={servers}")


def test_reset_mask_problems_are_gymnasiums_errors_and_nothing_is_reset():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        remote = runner.get_vector_environment(4, autoreset_mode="Disabled", servers=2)
        remote.reset(seed=0)
        for mask, error, message in [
            ([True] * 4, TypeError, "must be a numpy array"),
            (np.ones(3, dtype=bool), ValueError, r"must have shape `\(4,\)`, got \(3,\)"),
            (np.ones(4, dtype=np.int64), TypeError, "must have `dtype=np.bool_`"),
            (np.zeros(4, dtype=bool), ValueError, "at least one True value"),
        ]:
            with pytest.raises(error, match=message):
                remote.reset(options={"reset_mask": mask})
        options = {"reset_mask": np.array([False, False, True, False])}
        remote.reset(seed=0, options=options)
        assert list(options) == ["reset_mask"]  # the caller's dict is left as it was
        remote.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("servers", [1, 2, 3])
def test_infos_of_some_envs_only_merge_as_sync_vector_env_does(servers, mode):
    """Info keys only odd envs report, only when they terminate (a float, an array, a nested
    dict), with N=5 envs on K=1, 2, 3 servers; an option of length N reaches every env whole."""
    local = SyncVectorEnv([make_odd_info_env] * 5, autoreset_mode=mode)
    expected = record_partial_resets(local, steps=12, tag=True)
    local.close()
    infos = [step[2][4] for step in expected if step[0] == "step"]
    infos += [info["final_info"] for info in infos if "final_info" in info]  # SameStep's
    assert any("odd_score" in info and not info["_odd_score"].all() for info in infos)
    with RemoteRunner("tests.envs:make_odd_info_env", runtime="local") as runner:
        remote = runner.get_vector_environment(5, autoreset_mode=mode, servers=servers)
        actual = record_partial_resets(remote, steps=12, tag=True)
        remote.close()
    assert_identical(expected, actual, path=f"odd infos {mode} K={servers}")
