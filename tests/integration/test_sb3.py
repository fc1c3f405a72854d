"""The Stable-Baselines3 adapter (dacbench_remote.host.sb3) equals SB3's DummyVecEnv, and PPO trains on it.

SB3 and torch live in a venv of their own, .venv/sb3 (`scripts/install-deps.sh --test`): in
.venv, an importable torch makes DACBench import its SGD benchmark, which needs torchvision.
So each test runs its check there, in a child process (`python -m tests.integration.test_sb3
CHECK ARGS`), and fails when that venv or SB3 is missing. DACBench servers run in this
interpreter (the local runtime's `python=`), as a user whose benchmark's dependencies conflict
with the trainer's would run them.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from dacbench_remote import RemoteRunner
from dacbench_remote.errors import BadConfig
from dacbench_remote.testing import assert_identical

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SB3_PYTHON = REPO / ".venv" / "sb3" / "bin" / "python"
SERVER_PYTHON = "DACBENCH_REMOTE_TEST_SERVER_PYTHON"  # the child's DACBench servers run this


def run_check(name: str, *args: str, timeout: float = 600) -> str:
    """Run check `name` in the SB3 venv; fail with its output unless it passes."""
    if not SB3_PYTHON.exists():
        pytest.fail(f"no Stable-Baselines3 venv at {SB3_PYTHON}; run `bash scripts/install-deps.sh "
                    "--test` (CI does)", pytrace=False)
    env = {**os.environ, SERVER_PYTHON: sys.executable}
    done = subprocess.run([str(SB3_PYTHON), "-m", "tests.integration.test_sb3", name, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"{name}{args} in {SB3_PYTHON} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-8000:]}")
    return done.stdout


# ---------------------------------------------------------------------------------------------
# The tests (in this venv, without SB3)


def test_import_is_lazy_and_to_sb3_is_exported():
    out = run_check("check_import_is_lazy")
    assert "lazy ok" in out


@pytest.mark.parametrize("servers", ["1", "2"])
def test_cartpole_trajectory_equals_dummy_vec_env(servers):
    run_check("check_cartpole_trajectory", servers)


def test_luby_trajectory_equals_dummy_vec_env():
    run_check("check_luby_trajectory")


def test_dict_observations_and_infos_of_every_kind_equal_dummy_vec_env():
    run_check("check_dict_observations_and_infos")


def test_render_tiles_the_frames_like_dummy_vec_env():
    run_check("check_render")


def test_ppo_learns_on_remote_cartpole():
    out = run_check("check_ppo_training")
    assert "trained" in out


def test_ppo_learns_through_a_killed_server_with_restart_crashed():
    out = run_check("check_ppo_survives_a_killed_server")
    assert "survived" in out
    print(out)


def test_a_killed_server_without_restart_crashed_stops_ppo_with_server_crashed():
    out = run_check("check_killed_server_stops_ppo")
    assert "ServerCrashed raised" in out
    print(out)  # the time from the kill to the exception, measured, not asserted


def test_get_attr_set_attr_env_method_with_indices():
    run_check("check_attributes")


def test_closing_the_adapter_closes_the_remote_env_and_its_servers():
    run_check("check_close")


def test_autoreset_modes_other_than_same_step_are_refused():
    run_check("check_unsupported_autoreset_modes")


def test_without_sb3_the_adapter_names_the_package_to_install(monkeypatch):
    from dacbench_remote.host import sb3

    sb3.sb3_vec_env_class.cache_clear()
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # as if not installed
    try:
        with pytest.raises(ImportError, match=r"pip install stable-baselines3"):
            sb3.to_sb3(object())
        with pytest.raises(ImportError, match=r"pip install stable-baselines3"):
            sb3.SB3VecEnv  # noqa: B018
    finally:
        sb3.sb3_vec_env_class.cache_clear()


# ---------------------------------------------------------------------------------------------
# The checks (in the SB3 venv)


def check_import_is_lazy() -> None:
    import dacbench_remote

    assert callable(dacbench_remote.to_sb3)
    heavy = [name for name in ("stable_baselines3", "torch") if name in sys.modules]
    assert not heavy, f"importing dacbench_remote (and .sb3) imported {heavy}"
    from stable_baselines3.common.vec_env import VecEnv

    from dacbench_remote.host.sb3 import SB3VecEnv

    assert issubclass(SB3VecEnv, VecEnv)
    print("lazy ok")


def record(venv, actions: list, reseed_at: int) -> list:
    """seed(7), reset, step with `actions`; seed(100) and reset again before step `reseed_at`."""
    venv.seed(7)
    rows: list = [("reset", venv.reset(), copy.deepcopy(venv.reset_infos))]
    for t, batch in enumerate(actions):
        if t == reseed_at:
            venv.seed(100)
            rows.append(("reset", venv.reset(), copy.deepcopy(venv.reset_infos)))
        rows.append(("step", batch, *venv.step(batch), copy.deepcopy(venv.reset_infos)))
    return rows


def assert_same_trajectory(expected: list, actual: list, label: str) -> None:
    """Equal type for type; and the trajectory has ends by termination and by truncation."""
    assert len(expected) == len(actual)
    for t, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert_identical(want, got, path=f"{label} row {t}")
    ends = [info for row in actual if row[0] == "step" for info in row[5]
            if "terminal_observation" in info]
    truncated = [info["TimeLimit.truncated"] for info in ends]
    assert any(truncated), f"{label}: no episode ended by truncation; the check needs one"
    if label != "Luby":  # Luby's episodes only end at its cutoff
        assert not all(truncated), f"{label}: no episode ended by termination"


def random_actions(space: gymnasium.Space, count: int, steps: int) -> list:
    space.seed(3)
    return [np.array([space.sample() for _ in range(count)]) for _ in range(steps)]


def check_cartpole_trajectory(servers: str) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from dacbench_remote import to_sb3

    count, steps = 4, 90

    def make() -> gymnasium.Env:
        return gymnasium.make("CartPole-v1", max_episode_steps=15)

    actions = random_actions(make().action_space, count, steps)
    reference = DummyVecEnv([make] * count)
    expected = record(reference, actions, reseed_at=50)
    reference.close()
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local",
                      kwargs={"max_episode_steps": 15}) as runner:
        adapter = to_sb3(runner.get_vector_environment(count, autoreset_mode="SameStep",
                                                       servers=int(servers)))
        assert adapter.observation_space == reference.observation_space
        assert adapter.action_space == reference.action_space
        assert adapter.num_envs == count
        assert adapter.metadata == reference.metadata
        actual = record(adapter, actions, reseed_at=50)
        adapter.close()
    assert_same_trajectory(expected, actual, f"CartPole K={servers}")


def check_luby_trajectory() -> None:
    """Against DummyVecEnv over single remote Luby envs (DACBench is not in this venv)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from dacbench_remote import to_sb3

    count, steps = 3, 60
    python = os.environ[SERVER_PYTHON]
    with RemoteRunner("Luby", runtime="local", python=python) as singles, \
            RemoteRunner("Luby", runtime="local", python=python) as runner:
        reference = DummyVecEnv([singles.make_environment] * count)
        actions = random_actions(reference.action_space, count, steps)
        expected = record(reference, actions, reseed_at=30)
        adapter = to_sb3(runner.get_vector_environment(count, autoreset_mode="SameStep"))
        actual = record(adapter, actions, reseed_at=30)
        adapter.close()
    assert_same_trajectory(expected, actual, "Luby")


class InfoEnv(gymnasium.Env):
    """Dict observations; infos of every kind gymnasium batches; ends by termination or time."""

    observation_space = spaces.Dict({"position": spaces.Box(-50, 50, (2,), np.float32),
                                     "count": spaces.Discrete(10)})
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        self.position = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._observation(), {"reset": True, "options": dict(options or {})}

    def step(self, action):
        self.count += 1
        self.position = self.position + np.float32(action - 1)
        distance = float(np.abs(self.position).sum())
        info = {
            "count": self.count, "distance": distance, "far": distance > 2,
            "half": np.float32(distance / 2), "numpy_flag": np.bool_(self.count > 2),
            "vector": np.array([distance, -distance, self.count]), "name": f"step {self.count}",
            "items": [self.count, "x"], "nested": {"a": self.count, "b": {"c": distance}},
            "_private": self.count,
        }
        if self.count % 2:
            info["odd"] = self.count
        terminated = bool(self.np_random.random() < 0.2)
        return self._observation(), distance, terminated, self.count >= 6, info

    def _observation(self):
        return {"position": self.position.copy(), "count": self.count}


def check_dict_observations_and_infos() -> None:
    """Over an in-process SyncVectorEnv: the adapter takes any gymnasium 1.x VectorEnv."""
    from gymnasium.vector import SyncVectorEnv
    from stable_baselines3.common.vec_env import DummyVecEnv

    from dacbench_remote import to_sb3

    count, steps = 3, 40
    actions = random_actions(InfoEnv.action_space, count, steps)
    reference = DummyVecEnv([InfoEnv] * count)
    reference.set_options({"level": 2})
    expected = record(reference, actions, reseed_at=20)
    adapter = to_sb3(SyncVectorEnv([InfoEnv] * count, autoreset_mode="SameStep"))
    adapter.set_options({"level": 2})
    actual = record(adapter, actions, reseed_at=20)
    assert_same_trajectory(expected, actual, "InfoEnv")
    assert expected[0][2][0]["options"] == {"level": 2}  # set_options reached reset once
    assert expected[-1][6][0]["options"] == {}  # auto-resets and the second reset: no options
    adapter.set_options([{"level": 1}, {"level": 2}, {"level": 1}])
    with_raises(BadConfig, "same options", adapter.reset)


class FrameEnv(InfoEnv):
    """InfoEnv with rgb_array frames that show the step count."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def render(self):
        return np.full((4, 6, 3), 40 * self.count + int(self.position[0] > 0), dtype=np.uint8)


def check_render() -> None:
    from gymnasium.vector import SyncVectorEnv
    from stable_baselines3.common.vec_env import DummyVecEnv

    from dacbench_remote import to_sb3

    actions = random_actions(FrameEnv.action_space, 3, 4)
    reference = DummyVecEnv([FrameEnv] * 3)
    adapter = to_sb3(SyncVectorEnv([FrameEnv] * 3, autoreset_mode="SameStep"))
    frames = []
    for venv in (reference, adapter):
        assert venv.render_mode == "rgb_array"
        record(venv, actions, reseed_at=-1)
        frames.append((venv.render(), venv.get_images()))
    assert_identical(*frames)
    assert frames[0][0].shape == (8, 12, 3)  # 3 frames tiled 2 x 2


def check_ppo_training() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecCheckNan, VecMonitor

    from dacbench_remote import to_sb3

    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        envs = VecCheckNan(VecMonitor(to_sb3(runner.get_vector_environment(
            2, autoreset_mode="SameStep", servers=2))), raise_exception=True)
        model = PPO("MlpPolicy", envs, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu")
        model.learn(256)
        assert model.num_timesteps >= 256
        assert len(model.ep_info_buffer) > 0  # episodes ended and VecMonitor saw them
        actions, _ = model.predict(envs.reset(), deterministic=True)
        assert actions.shape == (2,)
        envs.close()
    print("trained", model.num_timesteps, len(model.ep_info_buffer))


def _kill_when(model, runner, timesteps: int, killed: list) -> threading.Thread:
    """A helper thread: SIGKILL the server of `runner` once `model` has taken `timesteps`."""
    def watch() -> None:
        deadline = time.monotonic() + 300
        while model.num_timesteps < timesteps and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(runner.connection.server_facts["pid"], signal.SIGKILL)
        killed.append(time.monotonic())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _ppo(envs):
    from stable_baselines3 import PPO

    return PPO("MlpPolicy", envs, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu")


def check_ppo_survives_a_killed_server() -> None:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor

    from dacbench_remote import to_sb3

    class CountCrashes(BaseCallback):
        crashed = 0

        def _on_step(self) -> bool:
            self.crashed += sum(bool(info.get("dacbench_remote", {}).get("crashed"))
                                for info in self.locals["infos"])
            return True

    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        vector = runner.get_vector_environment(4, autoreset_mode="SameStep", servers=2,
                                               restart_crashed=True)
        envs = VecMonitor(to_sb3(vector))
        model, killed, counter = _ppo(envs), [], CountCrashes()
        watcher = _kill_when(model, vector.extra_runners[0], 700, killed)
        model.learn(2048, callback=counter)
        watcher.join()
        assert killed, "the helper thread never killed the server"
        assert model.num_timesteps >= 2048, model.num_timesteps
        assert vector.restarts == 1 and vector.extra_runners[0].restarts == 1
        assert counter.crashed == 2  # the two envs of the killed server, once each
        envs.close()
    print("survived", model.num_timesteps, "timesteps;", vector.restarts, "restart;",
          counter.crashed, "episodes ended by the crash")


def check_killed_server_stops_ppo() -> None:
    from stable_baselines3.common.vec_env import VecMonitor

    from dacbench_remote import ServerCrashed, to_sb3

    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        vector = runner.get_vector_environment(4, autoreset_mode="SameStep", servers=2)
        model, killed = _ppo(VecMonitor(to_sb3(vector))), []
        watcher = _kill_when(model, vector.extra_runners[0], 300, killed)
        try:
            model.learn(100_000)
        except ServerCrashed:
            raised = time.monotonic()
        else:
            raise AssertionError("learn() finished although a server was killed")
        watcher.join()
        vector.close()
    print(f"ServerCrashed raised {raised - killed[0]:.3f} s after the kill, at "
          f"{model.num_timesteps} timesteps")


def with_raises(error: type, text: str, function: Callable, *args, **kwargs) -> Exception:
    try:
        function(*args, **kwargs)
    except error as exc:
        assert text in str(exc), f"{error.__name__} without {text!r}: {exc}"
        return exc
    raise AssertionError(f"{function} did not raise {error.__name__}")


def check_attributes() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from dacbench_remote import to_sb3

    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        adapter = to_sb3(runner.get_vector_environment(3, autoreset_mode="SameStep", servers=2))
        reference = DummyVecEnv([lambda: gymnasium.make("CartPole-v1")] * 3)
        for venv in (reference, adapter):
            venv.reset()
        for indices in (None, 1, [2, 0], np.array([1])):
            assert ([spec.id for spec in adapter.get_attr("spec", indices)]
                    == [spec.id for spec in reference.get_attr("spec", indices)]), indices
        assert adapter.get_attr("render_mode") == [None, None, None]
        assert adapter.has_attr("spec") and not adapter.has_attr("no_such_attribute")
        with_raises(AttributeError, "no_such_attribute", adapter.get_attr, "no_such_attribute")

        adapter.set_attr("marker", [1, 2])  # one value (a list) for every env
        assert adapter.get_attr("marker") == [[1, 2]] * 3
        adapter.set_attr("marker", 5, indices=[2, 1, 0])
        assert adapter.get_attr("marker", indices=[0, 2]) == [5, 5]
        adapter.set_attr("marker", 6, indices=[2])  # on the second server only
        assert adapter.get_attr("marker") == [5, 5, 6]
        reference.set_attr("marker", 5)
        reference.set_attr("marker", 6, indices=[2])

        assert adapter.env_method("get_wrapper_attr", "marker", indices=[2, 1, 0]) == [6, 5, 5]
        assert adapter.env_method("get_wrapper_attr", "marker", indices=[2, 0]) == [6, 5]
        for indices in (1, [2, 0], None):
            assert (adapter.env_method("get_wrapper_attr", "marker", indices=indices)
                    == reference.env_method("get_wrapper_attr", "marker", indices=indices))
        seeds = adapter.env_method("reset", seed=4)
        assert_identical([obs for obs, _ in reference.env_method("reset", seed=4)],
                         [obs for obs, _ in seeds])
        assert all(isinstance(obs, np.ndarray) and info == {} for obs, info in seeds)
        one = adapter.env_method("reset", seed=7, indices=0)
        assert_identical([obs for obs, _ in reference.env_method("reset", seed=7, indices=0)],
                         [obs for obs, _ in one])
        with_raises(IndexError, "out of range", adapter.env_method, "reset", indices=[3])
        assert adapter.env_is_wrapped(gymnasium.Wrapper) == [False] * 3
        assert adapter.env_is_wrapped(gymnasium.Wrapper, indices=[1]) == [False]
        adapter.close()
        reference.close()


def check_close() -> None:
    from dacbench_remote import to_sb3

    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        vector = runner.get_vector_environment(4, autoreset_mode="SameStep", servers=2)
        adapter = to_sb3(vector)
        adapter.reset()
        extra = vector.extra_runners[0]
        extra_pid = extra.connection.server_facts["pid"]
        env_id = vector.parts[0].env_id
        assert env_id in list_envs(runner)
        adapter.close()
        assert vector.closed
        assert env_id not in list_envs(runner)  # the main server closed the envs
        deadline = time.monotonic() + 10
        while not gone(extra_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(extra_pid), f"the extra server {extra_pid} outlived the adapter's close()"
        adapter.close()  # idempotent
        main_pid = runner.connection.server_facts["pid"]
    assert gone(main_pid)


def list_envs(runner: RemoteRunner) -> list[str]:
    connection = runner.connection
    with connection._lock:
        connection._proxy._pyroClaimOwnership()
        return connection._proxy.list_envs()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def check_unsupported_autoreset_modes() -> None:
    from gymnasium.vector import SyncVectorEnv

    from dacbench_remote import to_sb3

    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        for mode in ("NextStep", "Disabled"):
            vector = runner.get_vector_environment(2, autoreset_mode=mode)
            error = with_raises(BadConfig, "autoreset_mode='SameStep'", to_sb3, vector)
            assert repr(mode) in str(error)
            vector.close()
    local = SyncVectorEnv([lambda: gymnasium.make("CartPole-v1")] * 2)  # gymnasium's default
    with_raises(BadConfig, "'NextStep'", to_sb3, local)
    local.close()


if __name__ == "__main__":
    check, *arguments = sys.argv[1:]
    globals()[check](*arguments)
