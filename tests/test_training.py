"""train_agent/evaluate_agent without containers: the job file, refusals before anything starts,
and how the host names the way a side ended. The real runs are in
tests/integration/test_agent_images.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dacbench_remote.errors import BadConfig
from dacbench_remote.host.training import _ending, _Tail, evaluate_agent, train_agent
from dacbench_remote.rl.job import AgentJob
from dacbench_remote.runtimes.base import ServerProcess
from dacbench_remote.runtimes.local import LocalRuntime


def test_a_job_file_round_trips_and_bad_values_are_named(tmp_path: Path):
    job = AgentJob(action="train", algorithm="PPO", target="Luby", timesteps=64, seed=3,
                   hyperparameters={"n_steps": 32}, config={"cutoff": 10})
    assert AgentJob.read(job.check().write(tmp_path)) == job
    for change, message in [({"timesteps": 0}, "timesteps must be an integer >= 1"),
                            ({"num_envs": True}, "num_envs must be an integer >= 1"),
                            ({"action": "fly"}, "job action must be one of train, evaluate"),
                            ({"hyperparameters": [1]}, "hyperparameters must be a dict")]:
        with pytest.raises(BadConfig, match=message):
            AgentJob(**{**job.__dict__, **change}).check()
    with pytest.raises(BadConfig, match="evaluating needs eval_episodes >= 1"):
        AgentJob(action="evaluate", algorithm="PPO", target="Luby").check()
    (tmp_path / "job.json").write_text(json.dumps({"action": "train", "algorithm": "PPO",
                                                   "colour": "red"}))
    with pytest.raises(BadConfig, match=r"not a job file .*'colour'"):
        AgentJob.read(tmp_path / "job.json")
    (tmp_path / "job.json").write_text(json.dumps({"action": "train"}))
    with pytest.raises(BadConfig, match="not a complete job file"):
        AgentJob.read(tmp_path / "job.json")


def test_bad_arguments_are_refused_before_any_image_or_container(tmp_path: Path):
    with pytest.raises(BadConfig, match="timesteps must be an integer >= 1"):
        train_agent("Luby", timesteps=0, results_dir=tmp_path)
    with pytest.raises(BadConfig, match=r"choose a container runtime .* not local"):
        train_agent("Luby", timesteps=8, results_dir=tmp_path, runtime="local")
    with pytest.raises(BadConfig, match="benchmark must be a name or a DACBench benchmark object"):
        train_agent(42, timesteps=8, results_dir=tmp_path)
    with pytest.raises(BadConfig, match=r"image .*missing\.sif does not exist"):
        train_agent("Luby", timesteps=8, results_dir=tmp_path, runtime="bwrap",
                    env_image=tmp_path / "missing.sif", agent_image=tmp_path / "missing.sif")
    assert list(tmp_path.iterdir()) == []  # no run directory for a run that never started


def test_evaluate_needs_a_run_directory_with_its_own_model(tmp_path: Path):
    with pytest.raises(BadConfig, match="is not a run directory of train_agent"):
        evaluate_agent(tmp_path, episodes=1)
    (tmp_path / "provenance.json").write_text(json.dumps({"model_sha256": "0" * 64}))
    (tmp_path / "model.zip").write_bytes(b"another model")
    with pytest.raises(BadConfig, match="is not the model its provenance records"):
        evaluate_agent(tmp_path / "model.zip", episodes=1)


def _ended(argv: list[str]) -> str:
    runtime = LocalRuntime()
    process = ServerProcess(argv, Path("/nonexistent/ctl.sock"), runtime)
    process.wait_gone(10)
    return _ending(process)


def test_how_a_side_ended_is_said_in_words():
    assert _ended(["sh", "-c", "exit 3"]) == "exit status 3"
    assert _ended(["sh", "-c", "kill -KILL $$"]) == "killed by SIGKILL"
    # A container's launcher passes its child's death on as 128 + the signal.
    assert _ended(["sh", "-c", "exit 137"]) == "killed by SIGKILL (exit status 137)"


def test_progress_lines_are_relayed_whole_as_the_file_grows(tmp_path: Path):
    log = tmp_path / "progress.log"
    tail = _Tail(log)
    assert tail.new() == []  # not written yet
    with open(log, "a", buffering=1) as out:
        out.write("first\nsec")
        assert tail.new() == ["first"]
        out.write("ond\nthird\n")
        assert tail.new() == ["second", "third"]
    assert tail.new() == []


def test_the_trainer_says_what_it_needs_when_asked_for_help():
    shown = subprocess.run([sys.executable, "-m", "dacbench_remote.rl", "--help"],
                           capture_output=True, text=True, check=True).stdout
    assert "--socket" in shown and "--job" in shown and "--exit-on-stdin-close" in shown


def test_the_trainer_exits_when_its_lifeline_closes(tmp_path: Path):
    """A trainer whose server never answers ends only through its lifeline (exit status 70),
    not through the handshake's timeout (status 1, 30 s later)."""
    AgentJob(action="train", algorithm="PPO", target="Luby", timesteps=8).write(tmp_path)
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(tmp_path / "ctl.sock"))
    silent.listen(8)  # accepts connections, answers nothing
    python = Path(__file__).resolve().parent.parent / ".venv" / "sb3" / "bin" / "python"
    process = subprocess.Popen(
        [str(python), "-m", "dacbench_remote.rl", "--socket", str(tmp_path / "ctl.sock"),
         "--job", str(tmp_path / "job.json"), "--exit-on-stdin-close"],
        stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    try:
        # Once it is connecting (torch and SB3 imported), the host goes away.
        deadline = time.monotonic() + 60
        while "connect" not in _fds_of(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        process.stdin.close()
        assert process.wait(60) == 70
    finally:
        process.kill()
        silent.close()
    assert not (tmp_path / "result.json").exists()  # nobody waits for one


def _fds_of(pid: int) -> str:
    """'connect' once the process holds a UNIX socket connected to our listener."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return ""
    return "connect" if any(link.startswith("socket:") for link in links) else ""
