"""No fault corrupts a run: interrupted calls, values that cannot cross, and failing closes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dacbench_remote import ConnectionBroken, RemoteError, RemoteRunner, ServerCrashed
from dacbench_remote.runtimes.local import LocalRuntime

pytestmark = pytest.mark.integration


def _runner(target: str, **kwargs) -> RemoteRunner:
    return RemoteRunner(target, runtime=LocalRuntime(), results_path=None, **kwargs)


def _interrupt_main_when(ready: Callable[[], bool], sig: int) -> threading.Thread:
    """Send `sig` to the main thread once `ready()` holds, as Ctrl-C or `kill` would."""
    main = threading.main_thread().ident

    def watch() -> None:
        deadline = time.monotonic() + 60
        while not ready():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        time.sleep(0.2)  # the host is blocked in its call by now
        signal.pthread_kill(main, sig)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _step_started(path: Path, number: int) -> Callable[[], bool]:
    return lambda: path.exists() and path.read_text() == str(number)


def _interrupt_slow_step(env, started: Path, number: int, sig: int, raised: type) -> None:
    """Step `number` sleeps 2 s in the server; interrupt the host while it waits for the reply."""
    watcher = _interrupt_main_when(_step_started(started, number), sig)
    with pytest.raises(raised):
        env.step(2.0)
    watcher.join()


@pytest.mark.parametrize(("sig", "raised"), [(signal.SIGINT, KeyboardInterrupt),
                                              (signal.SIGTERM, SystemExit)])
def test_a_call_after_an_interrupted_step_gets_its_own_reply(tmp_path, sig, raised):
    started = tmp_path / "started"
    with _runner("tests.envs:make_counting_env", kwargs={"started_path": str(started)}) as runner:
        env = runner.get_environment()
        if sig == signal.SIGTERM:  # the runner turns SIGTERM into SystemExit
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        env.reset(seed=0)
        assert env.step(0.0)[4] == {"t": 1}
        _interrupt_slow_step(env, started, 2, sig, raised)
        # Step 2 is still sleeping in the server: this waits for it, skips its reply, and
        # returns the reply to step 3.
        observation, reward, _, _, info = env.step(0.25)
        assert (observation.tolist(), reward, info) == ([3], 0.25, {"t": 3})
        assert env.step(0.0)[4] == {"t": 4}


@pytest.mark.parametrize(("sig", "raised"), [(signal.SIGINT, KeyboardInterrupt),
                                              (signal.SIGTERM, SystemExit)])
def test_a_control_call_after_an_interrupted_one_gets_its_own_reply(tmp_path, sig, raised):
    started = tmp_path / "started"
    kwargs = {"started_path": str(started), "render_delay": 1.0}
    with _runner("tests.envs:make_counting_env", kwargs=kwargs) as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        watcher = _interrupt_main_when(lambda: started.exists() and started.read_text() == "render",
                                       sig)
        with pytest.raises(raised):
            env.render()
        watcher.join()
        env.step(0.0)
        assert env.render().tolist() == [1]


def test_a_reset_after_an_interrupted_step_gets_its_own_reply(tmp_path):
    started = tmp_path / "started"
    with _runner("tests.envs:make_counting_env", kwargs={"started_path": str(started)}) as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        _interrupt_slow_step(env, started, 1, signal.SIGINT, KeyboardInterrupt)
        observation, info = env.reset(seed=1)
        assert (observation.tolist(), info) == ([0], {"t": 0})
        assert env.step(0.0)[4] == {"t": 1}


def test_an_interrupt_mid_send_breaks_the_env_with_a_clear_error(tmp_path):
    started = tmp_path / "started"
    with _runner("tests.envs:make_counting_env", kwargs={"started_path": str(started)}) as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        pid = runner.server.pid
        _interrupt_slow_step(env, started, 1, signal.SIGINT, KeyboardInterrupt)
        # The server sleeps in step 1 and reads nothing: a 64 MB action blocks in the send,
        # and the interrupt lands with the frame half written.
        watcher = _interrupt_main_when(lambda: env._phase == "sending", signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            env.step(np.zeros(8 << 20))
        watcher.join()
        with pytest.raises(ConnectionBroken) as info:
            env.step(0.0)
        with pytest.raises(ConnectionBroken):  # and it stays refused, also on the control path
            env.render()
        os.kill(pid, 0)  # the server itself is fine
    message = str(info.value)
    assert "step() was interrupted with its request half sent" in message
    assert "make a new one" in message


def test_an_argument_that_cannot_cross_fails_before_sending(tmp_path):
    with _runner("tests.envs:make_counting_env") as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        assert env.step(0.0)[4] == {"t": 1}
        with pytest.raises(TypeError, match=r"cannot encode step\(\) action\['x'\]: type object"):
            env.step({"x": object()})
        cyclic: list = []
        cyclic.append(cyclic)
        with pytest.raises(TypeError, match=r"step\(\) action\[0\] refers back .*reference cycle"):
            env.step(cyclic)
        with pytest.raises(TypeError, match=r"cannot encode reset\(\) options\['callback'\]"):
            env.reset(options={"callback": lambda: None})
        # Nothing reached the server: the env counts on from where it was.
        observation, reward, _, _, info = env.step(0.0)
        assert (observation.tolist(), reward, info) == ([2], 0.0, {"t": 2})


def test_a_step_result_that_cannot_cross_is_a_remote_error_and_the_server_survives():
    with _runner("tests.envs:make_bad_replies_env") as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        with pytest.raises(RemoteError) as cyclic:
            env.step(1)
        with pytest.raises(RemoteError) as opaque:
            env.step(2)
        assert env.step(0)[4] == {"t": 3}
    assert "step() returned a value that cannot be sent" in str(cyclic.value)
    assert "step() result[4]['self'] refers back" in str(cyclic.value)
    assert "cannot encode step() result[4]['handle']: type object" in str(opaque.value)


def test_a_render_result_that_cannot_cross_is_a_remote_error():
    with _runner("tests.envs:make_bad_replies_env") as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        with pytest.raises(RemoteError) as info:
            env.render()
        assert env.step(0)[4] == {"t": 1}
    assert "cannot encode render() result['frame']: type object" in str(info.value)


def test_a_space_that_cannot_cross_is_a_remote_error_naming_it():
    with _runner("tests.envs:make_unsendable_space_env") as runner:
        with pytest.raises(RemoteError) as info:
            runner.get_environment()
        assert runner.server.alive()
    assert "['observation_space']" in str(info.value) and "_OpaqueSpace" in str(info.value)


def _assert_stopped(server) -> None:
    assert not server.alive()
    assert not server.socket_path.exists()
    assert not Path(f"{server.socket_path}.data").exists()


def test_close_stops_the_server_when_an_envs_close_raises():
    runner = _runner("tests.envs:make_failing_close_env")
    runner.start()
    server = runner.server
    try:
        runner.get_environment().reset(seed=0)
        with pytest.raises(RemoteError, match="close failed on purpose"):
            runner.close()
        _assert_stopped(server)
        runner.close()  # nothing left to close: quiet
    finally:
        server.stop()


def test_close_after_the_server_died_still_removes_its_sockets():
    runner = _runner("gymnasium:CartPole-v1")
    runner.start()
    server = runner.server
    try:
        runner.get_environment().reset(seed=0)
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait()
        with pytest.raises(ServerCrashed):
            runner.close()
        _assert_stopped(server)
    finally:
        server.stop()


def test_close_during_an_exception_keeps_that_exception():
    runner = _runner("tests.envs:make_failing_close_env")
    runner.start()
    server = runner.server
    try:
        with pytest.raises(ValueError, match="the run failed") as info, runner:
            runner.get_environment().reset(seed=0)
            raise ValueError("the run failed")
        _assert_stopped(server)
        if sys.version_info >= (3, 11):  # exception notes
            assert any("close failed on purpose" in note for note in info.value.__notes__)
    finally:
        server.stop()
