"""Record whole trajectories (reset and step results, with the actions) for exactness checks.

Used in-process and through remote envs; runnable as a script so an unprivileged user can
record a remote trajectory in its own process and hand it back as a pickle.
"""

from __future__ import annotations

import pickle
import sys

BENCHMARKS = ["FunctionApproximation", "Luby", "ToySGD", "gymnasium:CartPole-v1"]


def record_trajectory(env, *, seed: int = 0, episodes: int = 3, max_steps: int = 300) -> list:
    """Episode i resets with seed+i; actions come from the action space seeded with `seed`."""
    env.action_space.seed(seed)
    steps: list = []
    for episode in range(episodes):
        steps.append(("reset", env.reset(seed=seed + episode)))
        for _ in range(max_steps):
            action = env.action_space.sample()
            result = env.step(action)
            steps.append(("step", action, result))
            if result[2] or result[3]:
                break
    return steps


def make_local_env(benchmark: str):
    """The in-process env, built the way a user would build it without dacbench-remote."""
    if benchmark.startswith("gymnasium:"):
        import gymnasium

        return gymnasium.make(benchmark.partition(":")[2])
    import dacbench.benchmarks

    return getattr(dacbench.benchmarks, f"{benchmark}Benchmark")().get_environment()


def main() -> None:
    """argv: BENCHMARK RUNTIME IMAGE OUT.pickle — record through a RemoteRunner, pickle it."""
    from dacbench_remote import RemoteRunner

    benchmark, runtime, image, out = sys.argv[1:5]
    with RemoteRunner(benchmark, runtime=runtime, image=image or None) as runner:
        trajectory = record_trajectory(runner.get_environment())
    with open(out, "wb") as handle:
        pickle.dump(trajectory, handle)


if __name__ == "__main__":
    main()
