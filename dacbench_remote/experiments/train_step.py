"""The `train` step: a Stable-Baselines3 agent trained in its own image against a benchmark
served from the benchmark's image (`train_agent`); later steps reference the saved model
(`${train.model}`) and its evaluation (`${train.mean_return}`).

It runs on the driver's machine whatever the executor (one training run is one job; the
slurm executor's arrays are for trials), and stops at the trainer's next progress line when
the run is stopped.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from ..config import CONTAINER_RUNTIMES
from ..errors import BadConfig
from ..host.training import PROVENANCE_NAME, AgentRun, train_agent
from ..images.resolve import resolve_agent_image
from ..rl.job import MODEL_NAME
from ..runtimes.rootfs import default_rootfs_cache, image_sha256
from ..sweeps import spec as sweep_spec
from ..sweeps.sweepdir import read_json
from .containers import image_records
from .step import ANY, Params, StepContext, StepKind

RUNS = "runs"  # the step's run directories, inside its own directory


class TrainStep(StepKind):
    name = "train"
    keys = frozenset({"benchmark", "experiment", "config", "kwargs", "algorithm",
                      "agent_experiment", "agent_image", "timesteps", "seed", "num_envs",
                      "hyperparameters", "eval_episodes", "eval_seed"})

    def check(self, params: Params) -> dict:
        agent_image = params.string("agent_image")
        if isinstance(agent_image, str) and not params.deferred("agent_image"):
            agent_image = sweep_spec._image_ref(params.base, agent_image)
        return {
            "benchmark": params.benchmark(),
            "experiment": params.string("experiment"),
            "config": params.json_table("config"),
            "kwargs": params.json_table("kwargs"),
            "algorithm": params.string("algorithm", "PPO"),
            "agent_experiment": params.string("agent_experiment"),
            "agent_image": agent_image,
            "timesteps": params.integer("timesteps", required=True, minimum=1),
            "seed": params.integer("seed", 0, minimum=0),
            "num_envs": params.integer("num_envs", 1, minimum=1),
            "hyperparameters": params.json_table("hyperparameters"),
            "eval_episodes": params.integer("eval_episodes", 0, minimum=0),
            "eval_seed": params.integer("eval_seed", minimum=0),
        }

    def outputs(self, params: dict) -> dict:
        names = {"model": ANY, "model_sha256": ANY, "run_dir": ANY, "provenance": ANY,
                 "algorithm": ANY, "returns": ANY}
        episodes = params.get("eval_episodes")
        if not isinstance(episodes, int) or episodes > 0:  # a reference: known once resolved
            names["mean_return"] = ANY
        return names

    def images(self, step, params: dict, base: Path) -> list[dict]:
        runtime = step.runtime
        if runtime.kind not in CONTAINER_RUNTIMES:
            raise BadConfig(f"{step.key}: a train step runs the agent and the benchmark each in "
                            f"its own image: set runtime.kind to auto, apptainer or bwrap, not "
                            f"{runtime.kind!r}")
        if runtime.gpu:
            raise BadConfig(f"{step.key}: runtime.gpu is not supported by train steps (the "
                            "trainer uses CPU torch)")
        records = image_records(step, [(params["benchmark"], params["experiment"])])
        if params["agent_image"] is not None:
            sha256 = image_sha256(Path(params["agent_image"]), default_rootfs_cache())
            return [*records, {"agent_image": params["agent_image"], "sha256": sha256}]
        _, record = resolve_agent_image(params["algorithm"], params["agent_experiment"],
                                        build=True, progress=False)
        return [*records, {"agent": params["algorithm"], "experiment": record.get("experiment"),
                           "sha256": record.get("sha256")}]

    def run(self, ctx: StepContext) -> dict:
        p, step = ctx.params, ctx.step
        if step.executor.kind == "slurm":
            ctx.say(f"step {step.name}: trains on this machine (a train step is no Slurm job)")
        agent_run = _finished_run(ctx.dir / RUNS)
        if agent_run is not None:  # an earlier attempt trained it but did not record it
            ctx.say(f"step {step.name}: reusing {agent_run.run_dir.name}")
        else:
            ctx.check_cancelled()
            ctx.executed[0] += 1

            def progress(line: str) -> None:
                ctx.check_cancelled()  # raised inside train_agent, which stops both sides
                ctx.say(f"step {step.name}: {line}")

            runtime = step.runtime
            agent_run = train_agent(
                p["benchmark"], p["algorithm"], timesteps=p["timesteps"],
                results_dir=ctx.dir / RUNS, seed=p["seed"], num_envs=p["num_envs"],
                hyperparameters=p["hyperparameters"], eval_episodes=p["eval_episodes"],
                eval_seed=p["eval_seed"], experiment=p["experiment"],
                agent_experiment=p["agent_experiment"], config=p["config"] or None,
                kwargs=p["kwargs"], env_image=runtime.image, agent_image=p["agent_image"],
                runtime=runtime.kind, binds=runtime.binds, env=runtime.env,
                startup_timeout=runtime.startup_timeout, call_timeout=step.time_limit,
                progress=progress)
        returns = agent_run.returns
        return {"model": str(agent_run.model_path),
                "model_sha256": agent_run.provenance["model_sha256"],
                "run_dir": str(agent_run.run_dir),
                "provenance": str(agent_run.run_dir / PROVENANCE_NAME),
                "algorithm": agent_run.provenance["algorithm"], "returns": returns,
                "mean_return": statistics.fmean(returns) if returns else None}


def _finished_run(runs: Path) -> AgentRun | None:
    """A run directory train_agent completed in this step directory (train_agent moves a run
    there only once its model and provenance are written), or None. The hidden job directory
    of a run whose driver was killed (SIGKILL: no cleanup ran) is removed."""
    if not runs.is_dir():
        return None
    for unfinished in runs.glob(".train-*"):  # one driver per experiment: none is running
        shutil.rmtree(unfinished, ignore_errors=True)
    done = sorted(path for path in runs.glob("train-*") if (path / PROVENANCE_NAME).is_file()
                  and (path / MODEL_NAME).is_file())
    if not done:
        return None
    provenance = read_json(done[-1] / PROVENANCE_NAME)
    return AgentRun(done[-1], done[-1] / MODEL_NAME, provenance, provenance.get("episodes", []))
