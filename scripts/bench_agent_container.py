"""The extra cost per step of training in the agent image's container (train_agent) against PPO
on the host, both against Luby served from the base image (bwrap), measured in one run.

    .venv/sb3/bin/python scripts/bench_agent_container.py --image BASE.sif --agent-image AGENT.sif

Run with a Python that has Stable-Baselines3 (the baseline trains on the host): .venv/sb3 from
`scripts/install-deps.sh --test`. Without --image/--agent-image the catalog's images are used
(fetched, or built: the agent image's build needs a wheelhouse, see docs/recipes.md).

For each setting the two sides alternate (host, container, host, ...) `--repeats` times, with the
same seed, hyperparameters and torch threads (1); printed are the medians of the training time
per environment step (model.learn only: measured around it on the host, inside the container by
the trainer) and the ratio container/host, plus each side's fixed cost (start to trained model,
minus the training). Two settings: PPO with SB3's update work (n_epochs=10), where the env's
round trips are a small part, and a rollout-bound one (n_epochs=1, one minibatch), where they
are most of it. Timings are never asserted anywhere; the machine's load shows in the spread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "PPO, SB3's update work (n_epochs 10)": {"n_steps": 256, "batch_size": 64, "n_epochs": 10},
    "rollout-bound (n_epochs 1, one minibatch)": {"n_steps": 256, "batch_size": 256,
                                                  "n_epochs": 1},
}


def host_ppo(image: Path, timesteps: int, hyperparameters: dict, seed: int) -> tuple[float, float]:
    """(seconds in model.learn, seconds from start to trained model) of PPO in this process
    on a RemoteVectorEnv of Luby in the base image."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from dacbench_remote import RemoteRunner, to_sb3

    torch.set_num_threads(1)
    started = time.perf_counter()
    with RemoteRunner("Luby", image=image, runtime="bwrap", results_path=None) as runner:
        envs = VecMonitor(to_sb3(runner.get_vector_environment(1, autoreset_mode="SameStep")))
        model = PPO("MlpPolicy", envs, seed=seed, device="cpu", verbose=0, **hyperparameters)
        learn_started = time.perf_counter()
        model.learn(total_timesteps=timesteps)
        learned = time.perf_counter() - learn_started
        envs.close()
    return learned, time.perf_counter() - started


def container_ppo(image: Path, agent_image: Path, timesteps: int, hyperparameters: dict,
                  seed: int) -> tuple[float, float]:
    """The same through train_agent: the trainer in the agent image's container."""
    from dacbench_remote import train_agent

    with tempfile.TemporaryDirectory(prefix="bench-agent-") as results:
        started = time.perf_counter()
        run = train_agent("Luby", "PPO", timesteps=timesteps, seed=seed, results_dir=results,
                          hyperparameters=hyperparameters, env_image=image,
                          agent_image=agent_image, runtime="bwrap", torch_threads=1)
        total = time.perf_counter() - started
    return run.provenance["seconds"]["learn"], total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="the base image (Luby); default: the catalog's")
    parser.add_argument("--agent-image", type=Path, help="the agent image; default: the catalog's")
    parser.add_argument("--timesteps", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        print("run this with a Python that has Stable-Baselines3, e.g. .venv/sb3/bin/python",
              file=sys.stderr)
        return 2
    from dacbench_remote.images.resolve import resolve_agent_image, resolve_image

    image = args.image or resolve_image("Luby", build=True)[0]
    agent_image = args.agent_image or resolve_agent_image("PPO", build=True)[0]
    print(f"Luby in {image.name}, PPO in {agent_image.name}; {args.timesteps} timesteps, "
          f"1 env, torch on 1 thread, {args.repeats} alternating repeats, medians\n")
    header = f"{'setting':44} {'host us/step':>13} {'container us/step':>18} {'ratio':>6} " \
             f"{'host fixed s':>13} {'container fixed s':>18}"
    print(header)
    print("-" * len(header))
    for name, hyperparameters in SETTINGS.items():
        host, boxed = [], []
        for repeat in range(args.repeats):
            host.append(host_ppo(image, args.timesteps, hyperparameters, seed=repeat))
            boxed.append(container_ppo(image, agent_image, args.timesteps, hyperparameters,
                                       seed=repeat))
        per_step = [statistics.median(learn for learn, _ in side) / args.timesteps * 1e6
                    for side in (host, boxed)]
        fixed = [statistics.median(total - learn for learn, total in side) for side in (host, boxed)]
        print(f"{name:44} {per_step[0]:13.0f} {per_step[1]:18.0f} "
              f"{per_step[1] / per_step[0]:5.2f}x {fixed[0]:13.1f} {fixed[1]:18.1f}")
    print("\nratio: training time per step in the agent's container / on the host (1.00x = no "
          "extra cost). fixed: start to trained model minus training (images, containers, "
          "imports; the container side also starts the trainer's container and imports torch "
          "there).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
