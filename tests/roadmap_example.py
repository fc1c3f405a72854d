"""The roadmap's example, verbatim apart from imports and the agent factory.

Run as a script (also by an unprivileged user, from its own venv):
    python roadmap_example.py BENCHMARK OUT.pickle
It pickles what the agent saw, the runner's results file read back, and the runtime used.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np


class RecordingAgent:
    """A seeded random agent (DACBench's protocol) that records every state and reward it gets."""

    def __init__(self, env):
        self.action_space = env.action_space
        self.action_space.seed(7)
        self.seen: list = []

    def act(self, state, reward):
        self.seen.append(("act", state, reward))
        return self.action_space.sample()

    def train(self, next_state, reward):
        self.seen.append(("train", next_state, reward))

    def end_episode(self, state, reward):
        self.seen.append(("end", state, reward))


def agent_creation_function(env) -> RecordingAgent:
    return RecordingAgent(env)


def make_benchmark(name: str):
    import dacbench.benchmarks

    return getattr(dacbench.benchmarks, f"{name}Benchmark")()


def in_process(name: str, episodes: int = 10) -> list:
    """What DACBench itself does: run_benchmark on benchmark.get_environment()."""
    from dacbench.runner import run_benchmark

    benchmark = make_benchmark(name)
    benchmark.set_seed(42)
    env = benchmark.get_environment()
    agent = agent_creation_function(env)
    run_benchmark(env, agent, episodes)
    return agent.seen


def main() -> None:
    from dacbench_remote import RemoteRunner
    from dacbench_remote.host.results import read_run

    name, out = sys.argv[1:3]
    benchmark = make_benchmark(name)
    benchmark.set_seed(42)
    remote_runner = RemoteRunner(benchmark, experiment_identifier="exp:0.01")
    agent = agent_creation_function(remote_runner.get_environment())
    remote_runner.run(agent, number_of_episodes=10)
    facts = {"seen": agent.seen, "records": read_run(remote_runner.results_path),
             "runtime": remote_runner.runtime.name, "numpy": np.__version__}
    remote_runner.close()
    with open(out, "wb") as handle:
        pickle.dump(facts, handle)


if __name__ == "__main__":
    main()
