"""Every error a user can hit in the core path, each checked for the message it gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dacbench_remote import (
    BadConfig,
    CallTimeout,
    RemoteError,
    RemoteRunner,
    ServerCrashed,
    StartupTimeout,
    UnknownBenchmark,
    VersionMismatch,
)
from dacbench_remote.runtimes.base import Runtime
from dacbench_remote.runtimes.local import LocalRuntime
from dacbench_remote.wire import (
    codec,
)
from tests.needs import need_module

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie still answers kill(0); it is gone for our purposes once it is reaped or Z.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_unknown_dacbench_benchmark_lists_what_exists():
    need_module("dacbench")
    with RemoteRunner("NoSuchBench", runtime="local") as runner, pytest.raises(UnknownBenchmark) as info:
        runner.get_environment()
    assert "NoSuchBench" in str(info.value)
    assert "Luby" in str(info.value)


def test_unknown_gymnasium_id_is_named():
    with (RemoteRunner("gymnasium:NoSuchEnv-v9", runtime="local") as runner,
          pytest.raises(UnknownBenchmark) as info):
        runner.get_environment()
    assert "NoSuchEnv-v9" in str(info.value)


def test_unknown_module_is_named():
    with (RemoteRunner("no_such_module.sub:factory", runtime="local") as runner,
          pytest.raises(UnknownBenchmark) as info):
        runner.get_environment()
    assert "no_such_module" in str(info.value)


def test_bad_dacbench_config_names_benchmark_and_problem():
    need_module("dacbench")
    with RemoteRunner("Luby", runtime="local",
                      config="{this is not json") as runner, pytest.raises(BadConfig) as info:
        runner.get_environment()
    assert "LubyBenchmark rejected its config" in str(info.value)
    assert "JSONDecodeError" in str(info.value)


def test_bad_gymnasium_kwargs_name_the_argument():
    runner = RemoteRunner("gymnasium:CartPole-v1", runtime="local", kwargs={"no_such_argument": 1})
    with runner, pytest.raises(BadConfig) as info:
        runner.get_environment()
    assert "no_such_argument" in str(info.value)


def test_invalid_action_raises_the_envs_own_exception_with_remote_traceback():
    with RemoteRunner("tests.envs:make_image_env", runtime="local") as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        with pytest.raises(RemoteError) as info:
            env.step(17)
        # The env stays usable after its own exception.
        assert env.step(1)[1] == 1.0
    error = info.value
    assert error.remote_type == "ValueError"
    assert "invalid action 17" in str(error)
    assert "remote traceback" in str(error) and "envs.py" in error.remote_traceback


def test_value_that_cannot_cross_the_wire_is_named():
    with RemoteRunner("tests.envs:make_not_encodable_env", runtime="local") as runner:
        env = runner.get_environment()
        env.reset()
        with pytest.raises(RemoteError) as info:
            env.step(0)
    assert "object" in str(info.value) and "handle" in str(info.value)


def test_server_killed_mid_episode_raises_server_crashed_promptly():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local", call_timeout=60) as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        env.step(0)
        os.kill(runner.server.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ServerCrashed) as info:
            env.step(0)
        elapsed = time.monotonic() - started
        with pytest.raises(ServerCrashed):  # and it stays failed, no hang on later calls
            env.step(0)
    # Detected by the closed socket, not by the 60 s deadline.
    assert elapsed < 30, f"took {elapsed:.1f} s: the crash was found by the deadline, not by EOF"
    assert "went away during step()" in str(info.value)
    assert "exit code -9" in str(info.value)


def test_server_killed_during_a_slow_step_raises_server_crashed():
    with RemoteRunner("tests.envs:make_slow_env", runtime="local",
                      kwargs={"delay": 30}, call_timeout=120) as runner:
        env = runner.get_environment()
        env.reset()
        pid = runner.server.pid
        killer = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -9 {pid}"])
        with pytest.raises(ServerCrashed):
            env.step(0)
        killer.wait()


def test_call_past_its_deadline_raises_call_timeout():
    with RemoteRunner("tests.envs:make_slow_env", runtime="local",
                      kwargs={"delay": 5}, call_timeout=0.5) as runner:
        env = runner.get_environment()
        env.reset()
        with pytest.raises(CallTimeout) as info:
            env.step(0)
        with pytest.raises(CallTimeout):  # the channel is out of step now: refuse, don't desync
            env.step(0)
    assert "step() got no answer within" in str(info.value)


class _SilentRuntime(Runtime):
    """Starts a process that never creates the socket, printing something first."""

    name = "silent"

    def __init__(self, script: str):
        self.script = script

    def server_command(self, socket_path):
        return [sys.executable, "-c", self.script]


def test_startup_timeout_reports_server_output_and_leaves_nothing():
    runtime = _SilentRuntime("import time; print('booting very slowly', flush=True); time.sleep(60)")
    runner = RemoteRunner("Luby", runtime=runtime, startup_timeout=1.5)
    with pytest.raises(StartupTimeout) as info:
        runner.start()
    assert "did not answer within 2 s" in str(info.value)
    assert "booting very slowly" in str(info.value)
    assert runner.server is None


def test_server_exiting_at_startup_reports_exit_code_and_output():
    runtime = _SilentRuntime("import sys; print('missing dependency xyz', flush=True); sys.exit(3)")
    with pytest.raises(ServerCrashed) as info:
        RemoteRunner("Luby", runtime=runtime, startup_timeout=20).start()
    assert "exit code 3" in str(info.value)
    assert "missing dependency xyz" in str(info.value)


def test_version_mismatch_names_both_versions(monkeypatch):
    monkeypatch.setattr(codec, "WIRE_VERSION", 999)
    with pytest.raises(VersionMismatch) as info:
        RemoteRunner("gymnasium:CartPole-v1", runtime=LocalRuntime()).start()
    assert "client speaks version 999" in str(info.value)
    monkeypatch.undo()
    assert f"speaks version {codec.WIRE_VERSION}" in str(info.value)


def test_close_leaves_no_process_and_no_socket():
    runner = RemoteRunner("gymnasium:CartPole-v1", runtime="local")
    runner.start()
    env = runner.get_environment()
    env.reset(seed=1)
    pid, socket_path = runner.server.pid, runner.server.socket_path
    assert socket_path.exists()
    runner.close()
    runner.close()  # idempotent
    env.close()
    assert _gone(pid)
    assert not socket_path.exists()
    assert not Path(str(socket_path) + ".data").exists()


def test_server_exits_when_host_process_is_killed():
    host = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from dacbench_remote import RemoteRunner
            runner = RemoteRunner("gymnasium:CartPole-v1", runtime="local")
            runner.start()
            print(runner.server.pid, runner.server.socket_path, flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    pid_text, socket_path = host.stdout.readline().split()
    host.send_signal(signal.SIGKILL)
    host.wait()
    assert _gone(int(pid_text)), "the server outlived its killed host"
    assert not Path(socket_path).exists()
    # Its private directory too: the killed host cannot remove it, so the server does.
    assert not Path(socket_path).parent.exists()


def test_sigterm_to_host_stops_the_server():
    host = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import time
            from dacbench_remote import RemoteRunner
            with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
                print(runner.server.pid, runner.server.socket_path, flush=True)
                time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    pid_text, socket_path = host.stdout.readline().split()
    host.send_signal(signal.SIGTERM)
    assert host.wait(timeout=30) == 128 + signal.SIGTERM
    assert _gone(int(pid_text))
    assert not Path(socket_path).exists()


def test_results_file_gets_one_complete_line_per_episode(tmp_path):
    import json

    results = tmp_path / "out" / "results.jsonl"
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local", results_path=results) as runner:
        episodes = runner.run("random", number_of_episodes=3, seed=5)
    lines = results.read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["seed"] for r in records] == [5, 6, 7]
    assert [r["return"] for r in records] == [e.return_ for e in episodes]
    assert all(r["benchmark"] == "gymnasium:CartPole-v1" and r["runtime"] == "local" for r in records)
    assert np.isclose(sum(r["length"] for r in records), sum(e.length for e in episodes))


def test_runs_with_the_same_seed_repeat_exactly():
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        first = [(e.return_, e.length) for e in runner.run("random", 4, seed=11)]
    with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
        second = [(e.return_, e.length) for e in runner.run("random", 4, seed=11)]
    assert first == second


def test_server_stops_promptly_even_with_an_env_stuck_in_step():
    runner = RemoteRunner("tests.envs:make_slow_env", runtime="local",
                          kwargs={"delay": 120}, call_timeout=0.5)
    runner.start()
    env = runner.get_environment()
    env.reset()
    with pytest.raises(CallTimeout):
        env.step(0)
    server = runner.server
    server.process.stdin.close()  # the lifeline alone must be enough, no SIGTERM/SIGKILL needed
    assert server.wait_gone(10), "a stuck env kept the server alive after its lifeline closed"
    assert server.process.returncode == 0
    assert "stuck in a call" in server.output_tail()
    runner.close()


def test_container_runtime_without_catalog_entry_says_how_to_name_an_image():
    with pytest.raises(UnknownBenchmark) as info:
        RemoteRunner("gymnasium:CartPole-v1", runtime="bwrap").start()
    assert "not in the catalog" in str(info.value) and "--image PATH" in str(info.value)
