"""The zygote server: forked children are ordinary, isolated servers that die with their host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacbench_remote._sys.procfs import wait_until
from dacbench_remote._sys.sockets import new_socket_path, remove_socket_files
from dacbench_remote.errors import ZygoteError
from dacbench_remote.host.client import ServerConnection
from dacbench_remote.host.zygote_client import request_fork

ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def zygote():
    path = new_socket_path("zyg")
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "dacbench_remote.server", "--zygote",
                             "--socket", str(path), "--exit-on-stdin-close"],
                            stdin=subprocess.PIPE, env=env, cwd=ROOT)
    assert wait_until(path.exists, 20.0)
    yield proc, path
    proc.stdin.close()
    proc.wait(timeout=20)
    remove_socket_files(path)
    # Children (the spare server too) shut down after the zygote, each removing its sockets.
    assert wait_until(lambda: not path.parent.exists(), 5)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _first_obs(child: Path) -> list[int]:
    assert wait_until(lambda: Path(str(child) + ".data").exists(), 20.0)
    connection = ServerConnection(child, timeout=30)
    try:
        env = connection.make_env("tests.envs:make_leaky_env")
        obs, _ = env.reset(seed=1)
        env.close()
        return [int(x) for x in obs]
    finally:
        connection.close()


def test_children_do_not_see_each_others_globals(zygote):
    _proc, path = zygote
    seen = []
    for n in range(3):
        child, pid, lifeline = request_fork(path, f"t{n}", ["tests.envs"])
        try:
            seen.append(_first_obs(child))
        finally:
            os.close(lifeline)
        assert wait_until(lambda pid=pid: not _alive(pid), 20.0)
        assert not child.exists()
    # One reset, no leaked thread, an unseeded RNG: in every child, as in a fresh server.
    assert seen == [[1, 0, 0]] * 3


def _global_draws(child: Path) -> dict:
    assert wait_until(lambda: Path(str(child) + ".data").exists(), 20.0)
    connection = ServerConnection(child, timeout=30)
    try:
        env = connection.make_env("tests.envs:make_global_draws_env")
        _, info = env.reset()  # no seed: the server leaves the global RNGs as they are
        env.close()
        return info
    finally:
        connection.close()


def test_each_child_and_spare_draws_fresh_numbers_from_the_global_rngs(zygote):
    """numpy's legacy global RNG is not reseeded by os.fork(): the children must do it, as a
    new process would (the second and later children are the zygote's spare servers)."""
    _proc, path = zygote
    draws = []
    for n in range(4):
        child, _pid, lifeline = request_fork(path, f"r{n}", ["tests.envs"])
        try:
            draws.append(_global_draws(child))
        finally:
            os.close(lifeline)
    assert len({d["pid"] for d in draws}) == 4
    assert len({d["numpy"] for d in draws}) == 4, draws
    assert len({d["random"] for d in draws}) == 4, draws


def test_a_second_env_in_one_child_does_see_the_leak(zygote):
    """The leak detector works: within one process the leaks are visible."""
    _proc, path = zygote
    child, _pid, lifeline = request_fork(path, "same", [])
    try:
        assert _first_obs(child) == [1, 0, 0]
        assert _first_obs(child) == [2, 1, 1]
    finally:
        os.close(lifeline)


def test_child_exits_when_its_host_is_killed(zygote, tmp_path):
    proc, path = zygote
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from dacbench_remote.host.zygote_client import request_fork; "
         f"c, pid, fd = request_fork({str(path)!r}, 'held'); print(pid, flush=True); "
         "time.sleep(3600)"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    pid = int(holder.stdout.readline())
    child = path.parent / "held.sock"
    assert wait_until(child.exists, 20.0)
    assert _alive(pid)
    holder.kill()
    holder.wait()
    assert wait_until(lambda: not _alive(pid), 20.0)
    assert wait_until(lambda: not child.exists(), 20.0)  # it removed its sockets on the way out
    assert proc.poll() is None  # the zygote serves on


def test_children_die_with_the_zygote(zygote):
    proc, path = zygote
    child, pid, lifeline = request_fork(path, "orphan", [])
    try:
        assert wait_until(child.exists, 20.0)
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not _alive(pid), 20.0)
        assert wait_until(lambda: not child.exists(), 20.0)  # it shut down cleanly
    finally:
        os.close(lifeline)


def test_bad_requests_are_refused_with_the_reason(zygote):
    proc, path = zygote
    with pytest.raises(ZygoteError, match=r"ModuleNotFoundError.*no_such_module"):
        request_fork(path, "bad", ["no_such_module_xyz"])
    with pytest.raises(ZygoteError, match="plain name"):
        request_fork(path, "../escape", [])
    assert proc.poll() is None


def test_warm_server_in_the_local_runtime_leaves_nothing(monkeypatch):
    from dacbench_remote.host.zygote_client import WarmServer
    from dacbench_remote.runtimes.local import LocalRuntime

    monkeypatch.setenv("PYTHONPATH", ROOT)
    warm = WarmServer(LocalRuntime(), preload=["tests.envs"])
    warm.start()
    directory = warm.server.socket_path.parent
    seen = []
    for n in range(3):
        child, lifeline = warm.fork(f"w{n}")
        try:
            seen.append(_first_obs(child))
        finally:
            os.close(lifeline)
    zygote_pid = warm.server.pid
    warm.stop()
    assert seen == [[1, 0, 0]] * 3
    assert not directory.exists()
    assert not _alive(zygote_pid)


def test_an_old_server_without_zygote_is_reported_as_unsupported(tmp_path):
    from dacbench_remote.errors import ZygoteUnsupported
    from dacbench_remote.host.zygote_client import WarmServer
    from dacbench_remote.runtimes.local import LocalRuntime

    old = tmp_path / "old-python"  # a server whose argparse does not know --zygote
    old.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import argparse, sys; "
                   "p = argparse.ArgumentParser(); p.add_argument(\"--socket\"); "
                   "p.add_argument(\"--exit-on-stdin-close\", action=\"store_true\"); "
                   "p.parse_args(sys.argv[3:])' \"$@\"\n")
    old.chmod(0o755)
    warm = WarmServer(LocalRuntime(python=str(old)))
    with pytest.raises(ZygoteUnsupported, match="older dacbench-remote"):
        warm.start()
    assert warm.server is None


def test_warm_server_imports_its_modules_at_start_and_names_one_that_fails(monkeypatch):
    from dacbench_remote.host.zygote_client import WarmServer
    from dacbench_remote.runtimes.local import LocalRuntime

    monkeypatch.setenv("PYTHONPATH", ROOT)
    warm = WarmServer(LocalRuntime(), preload=["no_such_module_at_start"])
    try:
        with pytest.raises(ZygoteError, match=r"could not import.*no_such_module_at_start"):
            warm.start()
    finally:
        warm.stop()
    warm = WarmServer(LocalRuntime(), preload=["tests.envs"])
    warm.start()
    try:
        assert warm.alive()
        child, lifeline = warm.fork("pre")  # imported at start: forking still works
        assert _first_obs(child)
        os.close(lifeline)
    finally:
        warm.stop()


def _children_of(pid: int) -> set[int]:
    return {int(word) for task in Path(f"/proc/{pid}/task").iterdir()
            for word in (task / "children").read_text().split()}


def _live_children(pid: int) -> set[int]:
    """Children that have not exited (the zygote may not have reaped the others yet)."""
    return {child for child in _children_of(pid) if _alive(child)}


def test_the_next_server_is_forked_ahead_and_handed_to_the_next_request(zygote):
    proc, path = zygote
    child, pid, lifeline = request_fork(path, "first", ["tests.envs"])
    try:
        # After answering, the zygote forks a spare: its sockets listen before anyone asks.
        assert wait_until(lambda: len(_children_of(proc.pid) - {pid}) == 1, 20.0)
        (spare,) = _children_of(proc.pid) - {pid}
        second, second_pid, second_lifeline = request_fork(path, "second", ["tests.envs"])
        assert second_pid == spare and second.name != "second.sock"
        assert _first_obs(second) == _first_obs(child) == [1, 0, 0]  # both pristine
        os.close(second_lifeline)
        assert wait_until(lambda: not _alive(spare), 20.0)
        assert wait_until(lambda: not second.exists(), 20.0)
    finally:
        os.close(lifeline)


def test_a_request_for_modules_the_spare_lacks_gets_a_fresh_fork(zygote):
    proc, path = zygote
    _first, first_pid, lifeline = request_fork(path, "first", ["tests.envs"])
    os.close(lifeline)
    assert wait_until(lambda: len(_children_of(proc.pid) - {first_pid}) == 1, 20.0)
    (spare,) = _children_of(proc.pid) - {first_pid}
    child, pid, lifeline = request_fork(path, "more", ["tests.envs", "tests.needs"])
    try:
        assert pid != spare and child.name == "more.sock"
        assert wait_until(lambda: not _alive(spare), 20.0)  # the spare was discarded
        assert _first_obs(child) == [1, 0, 0]
    finally:
        os.close(lifeline)


def test_the_plain_text_refusals_of_older_zygotes_are_still_understood(tmp_path):
    """Zygotes in images built before error payloads answered {"ok": false, "error": TEXT}, and
    refused the preload request (which came later) as a bad fork request."""
    import json
    import socket
    import threading
    from types import SimpleNamespace

    from dacbench_remote.host.zygote_client import WarmServer

    path = tmp_path / "old-zygote.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)

    def answer_like_an_old_zygote():
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                request = json.loads(conn.recv(65536))
                text = (f"ValueError: expected a fork request with a plain name, got {request!r}"
                        if request["op"] == "preload" else "ModuleNotFoundError: No module named 'x'")
                conn.sendall((json.dumps({"ok": False, "error": text}) + "\n").encode())

    thread = threading.Thread(target=answer_like_an_old_zygote, daemon=True)
    thread.start()
    warm = WarmServer(runtime=None, preload=["x"])
    warm.server = SimpleNamespace(socket_path=path)
    warm._preload()  # refused as a fork request: not an error, the first fork imports instead
    with pytest.raises(ZygoteError, match="could not start a server: ModuleNotFoundError: No "
                                          "module named 'x'"):
        request_fork(path, "t1", ["x"], timeout=10)
    thread.join(10)
    listener.close()


# -- a fork that makes its first env in the same round trip (fork_with_env) ------------------

def _trial(target: str, agent: str = "random", **kwargs):
    from dacbench_remote.runtimes.options import RuntimeOptions
    from dacbench_remote.sweeps.trial import Trial

    return Trial(benchmark=target, agent=agent, seed=0, episodes=1, kwargs=kwargs,
                 runtime=RuntimeOptions(kind="local"))


def _forked_runner(path: Path, target: str, **kwargs):
    from dacbench_remote.sweeps.forked_runner import ForkedRunner

    return ForkedRunner(_trial(target, **kwargs), str(path))


def test_an_env_made_with_its_fork_steps_exactly_like_gymnasiums_own(zygote):
    import gymnasium
    import numpy as np

    proc, path = zygote
    runner = _forked_runner(path, "tests.envs:make_logged_cartpole")
    local = gymnasium.make("CartPole-v1")
    try:
        env = runner.get_environment()
        actions = np.random.default_rng(5).integers(0, 2, size=600)
        remote_obs, remote_info = env.reset(seed=3)
        local_obs, local_info = local.reset(seed=3)
        trajectory = [(remote_obs, local_obs), (remote_info, local_info)]
        for action in actions:
            remote, here = env.step(int(action)), local.step(int(action))
            trajectory += list(zip(remote, here, strict=True))
            if here[2] or here[3]:
                break
        assert len(trajectory) > 10
        for remote, here in trajectory:
            assert type(remote) is type(here)
            if isinstance(here, np.ndarray):
                assert remote.dtype == here.dtype and remote.shape == here.shape
                assert np.array_equal(remote, here)
            else:
                assert remote == here
        # The env's calls all went through its data channel: no Pyro5 connection was made.
        assert runner.connection._proxy._pyroConnection is None
        assert len(_children_of(proc.pid)) == 2  # this env's server and the next spare
    finally:
        runner.close()
        local.close()
    assert wait_until(lambda: len(_live_children(proc.pid)) == 1, 20.0)


def test_control_calls_of_an_env_made_with_its_fork_go_over_its_data_channel(zygote):
    from dacbench_remote.errors import NoSuchAttribute

    _proc, path = zygote
    runner = _forked_runner(path, "tests.envs:make_counting_env")
    try:
        env = runner.get_environment()
        env.reset()
        env.step(0.0)
        env.step(0.0)
        assert env.render().tolist() == [2]  # render
        assert env.render_delay == 0.0  # get_attr
        env.render_delay = 0.25  # set_attr
        assert env.render_delay == 0.25
        assert env.call_remote("render").tolist() == [2]  # call
        with pytest.raises(NoSuchAttribute, match="_started"):  # errors cross as they are
            env.call_remote("_started", "render")
        assert env.started_path is None
        assert runner.connection._proxy._pyroConnection is None
    finally:
        runner.close()
    with pytest.raises(Exception, match="closed"):
        env.render()


def _log_lines(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(pid), tag) for pid, tag in
            (line.split(" ", 1) for line in log.read_text().splitlines())]


def _fork_logged(path: Path, name: str, log: Path, tag: str, ahead: bool = False):
    from dacbench_remote.host.forked_env import fork_with_env

    return fork_with_env(path, name, ["tests.envs"], "tests.envs:make_logged_cartpole",
                         kwargs={"log": str(log), "tag": tag}, ahead=ahead, timeout=30)


def _release(forked) -> None:
    forked.channel.close()
    os.close(forked.lifeline)


def test_a_spare_that_made_the_env_ahead_serves_only_a_request_for_that_env(zygote, tmp_path):
    proc, path = zygote
    log = tmp_path / "creations.log"
    first = _fork_logged(path, "a1", log, "A", ahead=True)  # the next asks for A as well
    # The spare is forked and makes A while `first` runs.
    assert wait_until(lambda: len(_log_lines(log)) == 2, 20.0)
    assert {tag for _, tag in _log_lines(log)} == {"A"}
    (made_ahead,) = {pid for pid, _ in _log_lines(log)} - {first.pid}
    assert (first.pid, "A") in _log_lines(log)
    second = _fork_logged(path, "a2", log, "A", ahead=True)
    assert second.pid == made_ahead  # handed the spare whose env was ready
    assert second.env is not None and second.info["action_space"].n == 2
    assert wait_until(lambda: len(_log_lines(log)) == 3, 20.0)  # the next spare makes A again
    spare_with_a = _log_lines(log)[2][0]
    # A request for another env (C) must not get a server that made A: a fresh fork serves it.
    third = _fork_logged(path, "c", log, "C")
    assert third.pid not in {pid for pid, tag in _log_lines(log) if tag == "A"}
    assert (third.pid, "C") in _log_lines(log)
    assert wait_until(lambda: not _alive(spare_with_a), 20.0)  # discarded, not left over
    for forked in (first, second, third):
        _release(forked)
        assert wait_until(lambda pid=forked.pid: not _alive(pid), 20.0)
    # Only the current spare lives on (the others may be zombies until the zygote reaps them).
    assert len(_live_children(proc.pid)) <= 1


def test_an_env_that_cannot_be_made_in_the_fork_is_refused_and_leaves_no_child(zygote):
    from dacbench_remote.errors import DacbenchRemoteError
    from dacbench_remote.host.forked_env import fork_with_env

    proc, path = zygote
    _first, first_pid, lifeline = request_fork(path, "first", ["tests.envs"])
    os.close(lifeline)
    assert wait_until(lambda: _children_of(proc.pid) - {first_pid}, 20.0)
    with pytest.raises(DacbenchRemoteError, match="no_such_factory"):
        fork_with_env(path, "bad", ["tests.envs"], "tests.envs:no_such_factory", timeout=30)
    # The child that failed to make it shut down; only a spare for the next request is left.
    assert wait_until(lambda: len(_children_of(proc.pid) - {first_pid}) <= 1, 20.0)
    assert wait_until(lambda: len(_live_children(proc.pid)) <= 1, 20.0)


def test_an_older_zygote_that_makes_no_env_with_the_fork_still_forks(tmp_path):
    """Images built before fork_with_env answer a fork request that carries `make` like any
    other (they ignore the key): the caller connects and makes the env itself. This stands in
    for such an image's zygote, answering as its code did."""
    import json
    import socket
    import threading

    from dacbench_remote.host.forked_env import fork_with_env

    path = tmp_path / "old-zygote.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    seen = []

    def answer_like_an_old_zygote():
        conn, _ = listener.accept()
        with conn:
            seen.append(json.loads(conn.recv(65536)))
            conn.sendall((json.dumps({"ok": True, "pid": 4242, "socket": "old.sock"}) + "\n")
                         .encode())

    thread = threading.Thread(target=answer_like_an_old_zygote, daemon=True)
    thread.start()
    forked = fork_with_env(path, "t1", ["tests.envs"], "tests.envs:make_counting_env",
                           timeout=10)
    thread.join(10)
    listener.close()
    try:
        assert seen[0]["make"]["target"] == "tests.envs:make_counting_env"
        assert forked.env is None and forked.channel is None
        assert forked.pid == 4242 and forked.socket_path == tmp_path / "old.sock"
    finally:
        os.close(forked.lifeline)


# -- the runtime a slot's zygote runs in ------------------------------------------------------


@pytest.mark.parametrize("options", [
    {"kind": "local", "python": sys.executable, "env": {"A": "1"}},
    {"kind": "bwrap", "binds": ("/tmp:/mnt:ro",), "env": {"X": "y"}},
    {"kind": "auto"},
    {"kind": "bwrap", "gpu": True},  # refused alike
], ids=["local", "bwrap", "auto", "bwrap-gpu"])
def test_a_zygote_runs_in_the_runtime_the_trials_own_runner_would_make(options, tmp_path):
    """The driver makes its zygotes' runtime without importing the runner (warm.zygote_runtime);
    compared here with what RemoteRunner makes from the same trial options."""
    from dacbench_remote.host.runner import RemoteRunner
    from dacbench_remote.runtimes.options import RuntimeOptions
    from dacbench_remote.sweeps.trial import Trial
    from dacbench_remote.sweeps.warm import zygote_runtime

    image = tmp_path / "image.sif"
    image.write_bytes(b"not read while the runtime is only made")
    if options["kind"] != "local":
        options = {**options, "image": str(image)}
    trial = Trial("Luby", "random", 0, 1, runtime=RuntimeOptions(**options))

    def made(make):
        try:
            return make()
        except Exception as exc:  # the same refusal is what is compared
            return exc

    ours = made(lambda: zygote_runtime(trial))
    runners = made(lambda: RemoteRunner(trial.benchmark, experiment=trial.experiment,
                                        options=trial.runtime)._make_runtime())
    if isinstance(runners, Exception):
        assert type(ours) is type(runners) and str(ours) == str(runners)
        return
    assert type(ours) is type(runners)
    assert ours.describe() == runners.describe()
    assert ours.environment() == runners.environment()
    state = ("_facts", "_lock")  # what a runtime learns and guards once it runs
    assert {k: v for k, v in vars(ours).items() if k not in state} == \
        {k: v for k, v in vars(runners).items() if k not in state}


# -- a fork request sent ahead, answered to whoever holds it (a sweep's worker host) ---------

def test_a_fork_request_sent_ahead_is_read_later_or_given_up(zygote):
    import gymnasium

    from dacbench_remote.sweeps.forked_runner import ForkedRunner, request_trial_server

    proc, path = zygote
    trial = _trial("tests.envs:make_logged_cartpole")
    pending = request_trial_server(trial, str(path), ahead=False)
    runner = ForkedRunner(trial, str(path), pending=pending)  # reads the answer on start
    try:
        obs, _ = runner.get_environment().reset(seed=3)
        assert obs.tolist() == gymnasium.make("CartPole-v1").reset(seed=3)[0].tolist()
        with pytest.raises(RuntimeError, match="read or given up already"):
            pending.result()
        pending.close()  # taken by the runner: closes nothing of its server's
        assert runner.get_environment().step(0)[0].shape == (4,)
    finally:
        runner.close()
    # A request given up before its answer is read: the server it got goes with its lifeline.
    assert wait_until(lambda: len(_live_children(proc.pid)) == 1, 20.0)
    (spare,) = _live_children(proc.pid)
    request_trial_server(trial, str(path), ahead=False).close()
    assert wait_until(lambda: not _alive(spare), 20.0)  # the spare was handed that request, and left
    assert wait_until(lambda: len(_live_children(proc.pid)) == 1, 20.0)  # the next spare


def test_the_worker_host_sends_a_warm_trials_fork_request_before_forking_its_worker(zygote,
                                                                                   tmp_path):
    import json

    from dacbench_remote.sweeps.trial_runner import AHEAD_ENV, ZYGOTE_ENV
    from dacbench_remote.sweeps.worker import request_server

    _proc, path = zygote

    def requested(trial, env):
        (tmp_path / "trial.json").write_text(json.dumps(trial.to_dict()))
        return request_server({"trial_dir": str(tmp_path), "run_id": "r", "env": env})

    trial = _trial("tests.envs:make_logged_cartpole")
    sent = requested(trial, {ZYGOTE_ENV: str(path), AHEAD_ENV: None})
    assert sent is not None and sent[0] == trial
    forked = sent[1].result()
    try:
        assert forked.env is not None and forked.info["action_space"].n == 2
    finally:
        _release(forked)
    # Nothing is sent for a trial without a zygote, for DACBench's baselines (their server makes
    # no env of its own), or to a zygote that is gone: the worker then asks itself, and reports
    # what fails as the trial's error.
    assert requested(trial, {ZYGOTE_ENV: None}) is None
    assert requested(_trial("Luby", "dacbench:random"), {ZYGOTE_ENV: str(path)}) is None
    assert requested(trial, {ZYGOTE_ENV: str(tmp_path / "gone.sock")}) is None
