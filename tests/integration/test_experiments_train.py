"""The `train` step for real: PPO trained in the agent image (SB3 + CPU torch) against Luby
served from the base image, each in its own bwrap container, inside an experiment; a later
step gets the model by reference. The reference for the step's evaluation is evaluate_agent
loading the saved model again; a second run of the same spec trains nothing."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from dacbench_remote._sys.files import sha256_file
from dacbench_remote.experiments import STEP_KINDS, load_experiment, run_experiment
from dacbench_remote.host.training import evaluate_agent

from .test_experiments_local import experiment_environment, write_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def exp_env(monkeypatch, tmp_path: Path):
    yield from experiment_environment(monkeypatch, tmp_path)


def test_a_train_step_trains_in_the_agent_image_and_later_steps_use_its_model(
        base_image: Path, base_image_info: dict, agent_image: Path, agent_image_info: dict,
        tmp_path: Path, exp_env):
    spec_path = write_spec(tmp_path / "experiment.toml", f"""
        name = "trained"
        time_limit = 300
        [runtime]
        kind = "local"
        [steps.train]
        kind = "train"
        runtime = {{ kind = "bwrap", image = "{base_image}" }}
        benchmark = "Luby"
        agent_image = "{agent_image}"
        timesteps = 64
        seed = 3
        hyperparameters = {{ n_steps = 32, batch_size = 32, n_epochs = 1 }}
        eval_episodes = 2
        [steps.check]
        kind = "run"
        needs = ["train"]
        function = "tests.experiment_helpers:describe_file"
        inputs = {{ path = "${{train.model}}", mean_return = "${{train.mean_return}}" }}
        outputs = ["sha256", "mean_return"]
    """)
    # The step's fingerprint covers both images' sha256s.
    spec = load_experiment(spec_path)
    step = spec.steps["train"]
    images = STEP_KINDS["train"].images(step, step.params, tmp_path)  # checked when loaded
    assert sorted(r["sha256"] for r in images) == sorted(
        [base_image_info["sha256"], agent_image_info["sha256"]])

    lines: list[str] = []
    result = run_experiment(spec_path, progress=lines.append)
    assert result.ok, result
    assert result.steps["train"].executed == 1
    trained = result.steps["train"].outputs
    model = Path(trained["model"])
    assert model.name == "model.zip" and model.is_file()
    assert model.is_relative_to(tmp_path / "trained" / "steps" / "train")
    # `${train.model}` and `${train.mean_return}` reached the next step's function.
    checked = result.steps["check"].outputs
    assert checked["sha256"] == sha256_file(model) == trained["model_sha256"]
    assert checked["mean_return"] == trained["mean_return"]

    provenance = json.loads(Path(trained["provenance"]).read_text())
    assert provenance["env_image"]["sha256"] == base_image_info["sha256"]
    assert provenance["agent_image"]["sha256"] == agent_image_info["sha256"]
    assert (provenance["algorithm"], provenance["benchmark"], provenance["timesteps"],
            provenance["seed"]) == ("PPO", "Luby", 64, 3)
    assert provenance["model_sha256"] == sha256_file(model)

    # The model, loaded again in the agent image: the returns the step's evaluation gave.
    again = evaluate_agent(trained["run_dir"], episodes=2, env_image=base_image,
                           agent_image=agent_image, runtime="bwrap")
    assert len(again.returns) == 2 and again.returns == trained["returns"]
    assert trained["mean_return"] == statistics.fmean(again.returns)

    # The unchanged spec again: both steps cached, nothing trained.
    rerun = run_experiment(spec_path)
    assert rerun.ok and rerun.executed == 0, rerun
    assert {s.state for s in rerun.steps.values()} == {"cached"}
    assert rerun.steps["train"].outputs == trained
    assert [p.name for p in model.parent.parent.iterdir()] == [model.parent.name]

    # A driver killed after training but before recording the step: the next run takes the
    # finished run directory instead of training again; a killed run's job directory goes.
    (model.parent.parent / ".train-PPO-Luby-s3-dead.x").mkdir()
    (tmp_path / "trained" / "steps" / "train" / "outputs.json").unlink()
    resumed = run_experiment(spec_path)
    assert resumed.ok and resumed.executed == 0, resumed
    assert resumed.steps["train"].state == "done"
    assert resumed.steps["train"].outputs == trained
    assert [p.name for p in model.parent.parent.iterdir()] == [model.parent.name]
