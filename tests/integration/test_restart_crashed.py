"""restart_crashed=True: a server that dies (SIGKILL, segfault) is replaced, the episode in flight
ends truncated with info["dacbench_remote"]["crashed"], and the run goes on; without it, a dead
server raises ServerCrashed. Compared with in-process gymnasium envs and SyncVectorEnv."""

from __future__ import annotations

import json
import os
import signal

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import SyncVectorEnv

from dacbench_remote import RemoteRunner, ServerCrashed
from dacbench_remote._sys.procfs import ProcessRecord, wait_gone
from dacbench_remote.errors import BadConfig
from dacbench_remote.host.agents import RandomAgent
from dacbench_remote.host.runner import run_episode
from dacbench_remote.testing import assert_identical

pytestmark = pytest.mark.integration

CRASHED = {"dacbench_remote": {"crashed": True}}


def server_pid(runner: RemoteRunner) -> int:
    return runner.connection.server_facts["pid"]


def kill_server(runner: RemoteRunner) -> ProcessRecord:
    record = ProcessRecord.of(server_pid(runner))
    os.kill(record.pid, signal.SIGKILL)
    return record


def test_a_killed_server_ends_the_episode_truncated_and_the_env_goes_on_in_a_new_one():
    reference = gymnasium.make("CartPole-v1")
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local", results_path=None,
                      restart_crashed=True) as runner:
        env = runner.get_environment()
        observation, _ = env.reset(seed=0)
        for _ in range(3):
            observation, *_ = env.step(1)
        old_socket = runner.server.socket_path
        dead = kill_server(runner)
        result = env.step(0)
        assert_identical((observation, 0.0, False, True, CRASHED), result)
        assert runner.restarts == 1
        assert wait_gone([dead], timeout=5)
        assert not old_socket.exists() and server_pid(runner) != dead.pid
        # The same env object now drives a fresh env in the new server, exactly.
        assert_identical(reference.reset(seed=5), env.reset(seed=5))
        for action in (1, 0, 1):
            assert_identical(reference.step(action), env.step(action))


def test_a_segfaulting_server_is_replaced_every_time_and_runs_record_it(tmp_path):
    """run(): each episode's server segfaults in its 3rd step; every episode ends truncated
    there, recorded with crashed=True and the count of servers replaced so far."""
    results = tmp_path / "results.jsonl"
    with RemoteRunner("tests.envs:make_segfaulting_env", runtime="local", results_path=results,
                      restart_crashed=True) as runner:
        episodes = runner.run("random", 3, seed=0)
    assert [(e.length, e.truncated, e.crashed, e.server_restarts) for e in episodes] == [
        (3, True, True, 1), (3, True, True, 2), (3, True, True, 3)]
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(line["crashed"], line["server_restarts"]) for line in lines] == [
        (True, 1), (True, 2), (True, 3)]
    assert {line["restart_crashed"] for line in lines} == {True}


def test_episodes_around_a_crash_equal_in_process_ones():
    """Episodes before and after the one a crash cut short return what in-process episodes
    with the same seeds return."""
    local = gymnasium.make("CartPole-v1")
    agent = RandomAgent(local, seed=0)
    expected = [run_episode(local, agent, i, i) for i in range(3)]
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local", results_path=None,
                      restart_crashed=True) as runner:
        env = runner.get_environment()
        agent = RandomAgent(env, seed=0)
        first = run_episode(env, agent, 0, 0)

        class KillingAgent:  # kills the server before the 4th action of episode 1
            steps = 0

            def act(self, state, reward):
                self.steps += 1
                if self.steps == 4:
                    kill_server(runner)
                return agent.act(state, reward)

            def train(self, state, reward):
                pass

            def end_episode(self, state, reward):
                pass

        cut = run_episode(env, KillingAgent(), 1, 1)
        assert (cut.length, cut.terminated, cut.truncated, cut.crashed) == (4, False, True, True)
        assert runner.restarts == 1
        third = run_episode(env, RandomAgent(env, seed=0), 2, 2)
    local_third = run_episode(local, RandomAgent(local, seed=0), 2, 2)
    assert (first.return_, first.length) == (expected[0].return_, expected[0].length)
    assert (third.return_, third.length) == (local_third.return_, local_third.length)
    assert not third.crashed


def test_without_the_option_a_killed_server_raises_server_crashed():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local", results_path=None) as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        kill_server(runner)
        with pytest.raises(ServerCrashed, match="crashed or was killed"):
            env.step(0)
        assert runner.restarts == 0


def test_restart_crashed_is_refused_for_an_attached_runner():
    with pytest.raises(BadConfig, match="socket_id"):
        RemoteRunner("Luby", socket_id="srv-00000001", restart_crashed=True)


MODES = ["NextStep", "SameStep", "Disabled"]


def _record(env, kill_at: int | None = None, kill=None, steps: int = 12) -> list:
    """reset(seed=0), then seeded actions; `kill()` before step `kill_at`; in mode Disabled,
    envs that ended are reset alone."""
    env.action_space.seed(4)
    record = [env.reset(seed=0)]
    for t in range(steps):
        actions = env.action_space.sample()
        if t == kill_at:
            kill()
        result = env.step(actions)
        record.append(result)
        ended = result[2] | result[3]
        if env.metadata["autoreset_mode"].value == "Disabled" and ended.any():
            record.append(env.reset(seed=100 + t, options={"reset_mask": ended.copy()}))
    return record


@pytest.mark.parametrize("mode", MODES)
def test_a_killed_vector_server_affects_only_its_envs(mode):
    """N=4 on K=2 servers; the second server is killed before step 5: envs 2 and 3 end there
    (truncated, crashed) and carry on in a new server as the mode says; envs 0 and 1 step on
    exactly as in-process SyncVectorEnv envs."""
    local = SyncVectorEnv([lambda: gymnasium.make("CartPole-v1")] * 4, autoreset_mode=mode)
    expected = _record(local)
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local", results_path=None) as runner:
        envs = runner.get_vector_environment(4, autoreset_mode=mode, servers=2,
                                             restart_crashed=True)
        second = envs.extra_runners[0]
        actual = _record(envs, kill_at=5, kill=lambda: kill_server(second))
        assert envs.restarts == 1 and second.restarts == 1 and runner.restarts == 0
        envs.close()
    steps_expected = [r for r in expected if len(r) == 5]
    steps_actual = [r for r in actual if len(r) == 5]
    for t, (want, got) in enumerate(zip(steps_expected, steps_actual, strict=True)):
        for k in range(4):  # observations, rewards, terminated, truncated of envs 0 and 1
            assert_identical(want[k][:2], got[k][:2], path=f"step {t} [{k}]")
    crash = steps_actual[5]
    assert crash[1][2:].tolist() == [0.0, 0.0]
    assert crash[2][2:].tolist() == [False, False] and crash[3][2:].tolist() == [True, True]
    infos = crash[4]["final_info"] if mode == "SameStep" else crash[4]
    assert infos["_dacbench_remote"].tolist() == [False, False, True, True]
    assert infos["dacbench_remote"]["crashed"].tolist() == [False, False, True, True]
    if mode == "SameStep":  # the final observations: what envs 2 and 3 showed before the crash
        before = steps_actual[4][0]
        assert crash[4]["_final_obs"][2:].all()
        assert all(np.array_equal(crash[4]["final_obs"][i], before[i]) for i in (2, 3))
    else:
        assert np.array_equal(crash[0][2:], steps_actual[4][0][2:])
    if mode == "NextStep":  # the step after: envs 2 and 3 autoreset (reward 0, not done)
        after = steps_actual[6]
        assert after[1][2:].tolist() == [0.0, 0.0] and not after[2][2:].any()
    for later in steps_actual[7:]:  # and they step on in the new server
        assert later[0].shape == (4, 4) and "dacbench_remote" not in later[4]


def test_a_killed_vector_server_without_the_option_raises_server_crashed():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local", results_path=None) as runner:
        envs = runner.get_vector_environment(4, servers=2)
        envs.reset(seed=0)
        kill_server(envs.extra_runners[0])
        with pytest.raises(ServerCrashed):
            envs.step(np.zeros(4, dtype=np.int64))
        envs.close()
