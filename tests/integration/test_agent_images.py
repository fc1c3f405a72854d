"""RL agents in their own images, for real: the agent image (SB3 + CPU torch, built from the test
wheelhouse) trains PPO against Luby served from the base image, each side in its own bwrap
container, sharing only their pair's socket directory.

References are independent of the code under test: the saved weights are compared tensor by
tensor with torch itself (in .venv/sb3), and the saved model is evaluated again by SB3 on the
host against the base image's server (RemoteRunner), not only by evaluate_agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dacbench_remote._sys.files import sha256_file
from dacbench_remote._sys.procfs import argv_of, descendants
from dacbench_remote._sys.sockets import new_socket_path
from dacbench_remote.errors import AgentCrashed, AgentError, ServerCrashed
from dacbench_remote.host.training import evaluate_agent, train_agent
from dacbench_remote.images.manifest import MANIFEST_NAME, package_versions
from dacbench_remote.images.sif import SifImage
from dacbench_remote.runtimes.local import LocalRuntime

from .conftest import AGENT_RECIPE, REPO, agent_wheelhouse, build_recipe_image
from .runtime_images import accepts, wait_until

pytestmark = pytest.mark.integration

SB3_PYTHON = REPO / ".venv" / "sb3" / "bin" / "python"
# Tiny PPO runs: a few updates of a small batch, so the suite stays fast.
TINY = {"n_steps": 64, "batch_size": 32, "n_epochs": 2}


@pytest.fixture
def private_sockets(monkeypatch, tmp_path_factory):
    """A socket root of this test's own (short: AF_UNIX paths have 107 bytes)."""
    root = Path("/tmp") / f"dra-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(root))
    yield root
    left = sorted(p.name for p in root.iterdir()) if root.exists() else []
    shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"sockets left behind: {left}"


def _train(base_image: Path, agent_image: Path, results: Path, **options):
    settings = dict(timesteps=256, seed=1, num_envs=2, hyperparameters=TINY, eval_episodes=3,
                    env_image=base_image, agent_image=agent_image, runtime="bwrap")
    return train_agent("Luby", "PPO", results_dir=results, **{**settings, **options})


def _our_processes() -> list[tuple[int, tuple[str, ...]]]:
    """This test's descendants that run a server or a trainer."""
    found = []
    for pid in descendants(os.getpid()):
        argv = argv_of(pid)
        if any("dacbench_remote.rl" in a or "dacbench_remote.server" in a
               or "dacbench-remote-launcher" in a for a in argv):
            found.append((pid, argv))
    return found


def _policy_tensors_equal(first: Path, second: Path) -> bool:
    """Whether two saved models hold exactly the same policy parameters, by torch itself."""
    code = textwrap.dedent("""
        import io, sys, zipfile, torch
        def tensors(path):
            with zipfile.ZipFile(path) as archive:
                return torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu")
        a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
        assert len(a) > 0
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print("same" if same else "different")
    """)
    out = subprocess.run([str(SB3_PYTHON), "-c", code, str(first), str(second)],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out == "same"


def test_the_agent_image_is_built_from_the_wheelhouse_which_its_manifest_records(
        agent_image_info: dict, record_property):
    record_property("agent_image_size_mb", round(agent_image_info["size"] / 1e6, 1))
    record_property("agent_image_build_seconds", agent_image_info.get("seconds"))
    image = SifImage.open(Path(agent_image_info["path"]))
    manifest = image.json_object(MANIFEST_NAME)
    [torch_wheel] = agent_wheelhouse().glob("torch-2.13.0+cpu-*.whl")
    # torch came from the wheelhouse (the index has no +cpu build); the rest from the index.
    assert manifest["wheelhouse"] == [{"file": torch_wheel.name,
                                       "sha256": sha256_file(torch_wheel)}]
    versions = package_versions(manifest, "torch", "stable-baselines3", "gymnasium", "numpy")
    assert versions == {"torch": "2.13.0+cpu", "stable-baselines3": "2.9.2",
                        "gymnasium": "1.4.0", "numpy": "2.4.6"}
    assert not any(p["name"].startswith("nvidia") for p in manifest["packages"]["python"])
    labels = image.labels()
    assert labels["org.dacbench-remote.kind"] == "agent"
    assert any("PPO on CartPole-v1: 64 steps ok" in line
               for line in agent_image_info["test_output"])
    # Cached by content (recipe, package, the wheelhouse's wheels): asked again, not rebuilt.
    again = build_recipe_image(AGENT_RECIPE, wheelhouse=agent_wheelhouse())
    assert (again["built_now"], again["sha256"], again["key"]) == (
        False, agent_image_info["sha256"], agent_image_info["key"])


def test_ppo_in_its_image_trains_the_same_weights_twice_and_its_model_evaluates_again(
        base_image: Path, base_image_info: dict, agent_image: Path, agent_image_info: dict,
        tmp_path: Path, private_sockets):
    lines: list[str] = []
    first = _train(base_image, agent_image, tmp_path / "a", progress=lines.append)
    second = _train(base_image, agent_image, tmp_path / "b")
    other_seed = _train(base_image, agent_image, tmp_path / "c", seed=2)

    # Same seeds, same weights, exactly; another seed, other weights (the check can fail).
    assert _policy_tensors_equal(first.model_path, second.model_path)
    assert not _policy_tensors_equal(first.model_path, other_seed.model_path)
    assert first.provenance["parameters_sha256"] == second.provenance["parameters_sha256"]
    assert first.returns == second.returns and len(first.returns) == 3

    # The provenance names both images, the seeds, hyperparameters and the agent's stack.
    provenance = json.loads((first.run_dir / "provenance.json").read_text())
    assert provenance["env_image"]["sha256"] == base_image_info["sha256"]
    assert provenance["agent_image"]["sha256"] == agent_image_info["sha256"]
    assert (provenance["algorithm"], provenance["benchmark"], provenance["seed"],
            provenance["num_envs"], provenance["timesteps"]) == ("PPO", "Luby", 1, 2, 256)
    assert provenance["hyperparameters"] == TINY
    assert provenance["effective_hyperparameters"]["n_steps"] == 64
    assert provenance["effective_hyperparameters"]["gamma"] == 0.99  # a default, recorded too
    assert provenance["versions"]["stable_baselines3"] == "2.9.2"
    assert provenance["versions"]["torch"] == "2.13.0+cpu"
    assert provenance["model_sha256"] == sha256_file(first.model_path)
    assert sorted(p.name for p in first.run_dir.iterdir()) == [
        "model.zip", "progress.log", "provenance.json"]
    assert sorted(p.name for p in tmp_path.joinpath("a").iterdir()) == [first.run_dir.name]
    assert any(line.startswith("timesteps 256/256") for line in lines), lines

    # Loaded again in the agent image: the returns train's own evaluation gave.
    again = evaluate_agent(first.run_dir, episodes=3, env_image=base_image,
                           agent_image=agent_image, runtime="bwrap")
    assert again.returns == first.returns
    assert len((first.run_dir / "evaluations.jsonl").read_text().splitlines()) == 1

    # And by SB3 on the host, against the base image's server: the same returns again.
    reference = subprocess.run(
        [str(SB3_PYTHON), "-c", HOST_EVALUATION, str(first.model_path), str(base_image)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert json.loads(reference.stdout.splitlines()[-1]) == first.returns
    assert _our_processes() == []


# SB3 on the host loads the model and plays Luby served from the base image (deterministic
# policy; episode i resets with seed 1 + i, the run's eval seed).
HOST_EVALUATION = textwrap.dedent("""
    import json, sys
    from stable_baselines3 import PPO
    from dacbench_remote import RemoteRunner
    model = PPO.load(sys.argv[1], device="cpu")
    returns = []
    with RemoteRunner("Luby", image=sys.argv[2], runtime="bwrap", results_path=None) as runner:
        env = runner.get_environment()
        for i in range(3):
            observation, _ = env.reset(seed=1 + i)
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(observation, deterministic=True)
                observation, reward, terminated, truncated, _ = env.step(int(action))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    print(json.dumps(returns))
""")


PROBE = textwrap.dedent("""
    # Imported at interpreter start in both containers (PYTHONPATH): what can this side see?
    import json, os, socket
    argv = open("/proc/self/cmdline", "rb").read().split(b"\\0")
    argv = [a.decode() for a in argv if a]
    if "--socket" in argv:
        own = argv[argv.index("--socket") + 1]
        def listing(path):
            try:
                return sorted(os.listdir(path))
            except OSError as exc:
                return f"<{exc.strerror}>"
        def connects(path):
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(path)
                    return "connected"
                except OSError as exc:
                    return f"<{exc.strerror}>"
        side = "agent" if any("dacbench_remote.rl" in a for a in argv) else "server"
        seen = {"own": own, "own_dir": listing(os.path.dirname(own)),
                "own_mode": oct(os.stat(os.path.dirname(own)).st_mode & 0o777),
                "root": listing(os.path.dirname(os.path.dirname(own))),
                "other": {p: connects(p) for p in os.environ["PROBE_OTHERS"].split(":")}}
        if side == "agent":
            seen["own_connects"] = connects(own)
        with open(f"/tmp/probe/{side}.json", "w") as out:
            json.dump(seen, out)
""")


def test_neither_container_of_a_pair_sees_another_servers_socket(
        base_image: Path, agent_image: Path, tmp_path: Path, private_sockets):
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o777)
    (probe / "sitecustomize.py").write_text(PROBE)
    # Another server of the same user, unsandboxed: the most tempting target there is.
    other_socket = new_socket_path("other")
    other = LocalRuntime().start(other_socket)
    try:
        assert wait_until(lambda: accepts(other_socket), 60)
        others = f"{other_socket}:{other_socket}.data"
        probe_env = {"PYTHONPATH": "/tmp/probe", "PROBE_OTHERS": others}
        _train(base_image, agent_image, tmp_path / "results", timesteps=64, eval_episodes=0,
               binds=[f"{probe}:/tmp/probe"], env=probe_env,
               agent_binds=[f"{probe}:/tmp/probe"], agent_env=probe_env)
    finally:
        other.stop()
    agent = json.loads((probe / "agent.json").read_text())
    server = json.loads((probe / "server.json").read_text())
    # Both sides saw the same pair directory, holding only the pair's two sockets (the server
    # looked as it started, before it made them).
    assert agent["own"] == server["own"]
    assert agent["own_dir"] == ["ctl.sock", "ctl.sock.data"] and server["own_dir"] == []
    assert agent["own_mode"] == server["own_mode"] == "0o700"
    assert agent["own_connects"] == "connected"  # the probe can connect where it may
    for seen in (agent, server):
        # Of the socket root only the pair's own directory shows; the other server's socket
        # is unreachable by its path.
        assert seen["root"] == [Path(seen["own"]).parent.name], seen
        assert set(seen["other"].values()) == {"<No such file or directory>"}, seen
    assert _our_processes() == []


def _wait_for_training(lines: list[str], done: threading.Event) -> None:
    assert wait_until(lambda: done.is_set() or any(line.startswith("timesteps") for line in lines),
                      180), "training did not start"
    assert not done.is_set(), "training ended before the fault"


@pytest.mark.parametrize("victim", ["agent", "server"])
def test_killing_either_container_ends_the_run_naming_the_side_and_leaves_nothing(
        victim: str, base_image: Path, agent_image: Path, tmp_path: Path, private_sockets):
    lines: list[str] = []
    outcome: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["run"] = _train(base_image, agent_image, tmp_path / "results",
                                    timesteps=200_000, eval_episodes=0, progress=lines.append)
        except Exception as exc:
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _wait_for_training(lines, done)
        marker = "dacbench_remote.rl" if victim == "agent" else "dacbench_remote.server"
        targets = [pid for pid, argv in _our_processes()
                   if any(marker in a for a in argv) and "python3" in argv[0]]
        assert len(targets) == 1, _our_processes()
        os.kill(targets[0], signal.SIGKILL)
        assert done.wait(120), "the run did not end after the kill"
    finally:
        thread.join(300)
    error = outcome.get("error")
    if victim == "agent":
        assert isinstance(error, AgentCrashed), outcome
        assert "the agent's container (PPO" in str(error)
        assert "killed by SIGKILL" in str(error) and "server was still running" in str(error)
    else:
        assert isinstance(error, ServerCrashed) and not isinstance(error, AgentCrashed), outcome
        assert "the benchmark's server (Luby" in str(error) and "died while the agent" in str(error)
    # Nothing left: no process, no socket (the fixture checks the root), no run directory or
    # half-written model, no mount.
    assert wait_until(lambda: _our_processes() == [], 10), _our_processes()
    assert list((tmp_path / "results").iterdir()) == []
    with open("/proc/self/mountinfo") as mounts:
        assert not any(str(agent_image.name) in line or "squashfuse" in line for line in mounts)


def test_a_hyperparameter_the_algorithm_refuses_is_the_agents_error(
        base_image: Path, agent_image: Path, tmp_path: Path, private_sockets):
    with pytest.raises(AgentError, match=r"PPO refused the hyperparameters .*n_stepz.*it takes "
                                         r".*n_steps"):
        _train(base_image, agent_image, tmp_path / "results",
               hyperparameters={"n_stepz": 64})
    assert list((tmp_path / "results").iterdir()) == []
    assert _our_processes() == []


def test_the_cli_trains_and_evaluates_with_progress_on_stderr(
        base_image: Path, agent_image: Path, tmp_path: Path, private_sockets):
    command = [sys.executable, "-m", "dacbench_remote", "train", "Luby", "--agent", "PPO",
               "--timesteps", "128", "--seed", "5", "--hyperparameters", json.dumps(TINY),
               "--eval-episodes", "2", "--image", str(base_image), "--agent-image",
               str(agent_image), "--runtime", "bwrap", "--out", str(tmp_path / "out")]
    trained = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "dacbench-remote: timesteps 128/128" in trained.stderr
    [run_dir] = (tmp_path / "out").iterdir()
    assert f"{run_dir / 'model.zip'}" in trained.stdout
    recorded = json.loads((run_dir / "provenance.json").read_text())["episodes"]
    evaluated = subprocess.run(
        [sys.executable, "-m", "dacbench_remote", "evaluate", str(run_dir), "--episodes", "2",
         "--image", str(base_image), "--agent-image", str(agent_image), "--runtime", "bwrap"],
        capture_output=True, text=True, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    for episode in recorded:
        assert f"{episode['return']:.6g}" in evaluated.stdout
    assert f"mean return {sum(e['return'] for e in recorded) / 2:.6g}" in evaluated.stdout
