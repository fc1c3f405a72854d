"""Per env-step cost of RemoteVectorEnv (K=1, 2 servers) vs SyncVectorEnv, AsyncVectorEnv, SB3.

CartPole-v1 (a (4,) float32 observation), NextStep autoreset, local runtime. Prints a table
with ratios vs AsyncVectorEnv and vs SyncVectorEnv measured in the same run, and whether the
targets (N=8: <= 0.25x Async; N=64: <= 3x Sync) are met.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np
from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv

from dacbench_remote import RemoteRunner


def per_env_step(env, n: int, steps: int, step=None) -> float:
    """Microseconds per env-step over `steps` batched steps (after a warm-up)."""
    step = step or env.step
    actions = np.zeros(n, dtype=np.int64)
    for _ in range(20):
        step(actions)
    started = time.perf_counter()
    for _ in range(steps):
        step(actions)
    return (time.perf_counter() - started) / (steps * n) * 1e6


def make():
    return gymnasium.make("CartPole-v1")


def sb3_subproc(n: int, steps: int) -> float | None:
    try:
        from stable_baselines3.common.vec_env import SubprocVecEnv
    except ImportError:
        return None
    env = SubprocVecEnv([make] * n)
    env.reset()

    def step(actions):
        env.step_async(actions)
        return env.step_wait()
    try:
        return per_env_step(env, n, steps, step)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="batched steps per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        steps = max(50, args.steps // max(1, n // 8))
        results: dict[str, float | None] = {}
        sync = SyncVectorEnv([make] * n)
        sync.reset(seed=0)
        results["SyncVectorEnv"] = per_env_step(sync, n, steps)
        sync.close()
        asynchronous = AsyncVectorEnv([make] * n)
        asynchronous.reset(seed=0)
        results["AsyncVectorEnv"] = per_env_step(asynchronous, n, steps)
        asynchronous.close()
        results["SB3 SubprocVecEnv"] = sb3_subproc(n, steps)
        for servers in (1, 2):
            if servers > n:
                continue
            with RemoteRunner("gymnasium:CartPole-v1", runtime="local") as runner:
                remote = runner.get_vector_environment(n, servers=servers)
                remote.reset(seed=0)
                results[f"RemoteVectorEnv K={servers}"] = per_env_step(remote, n, steps)
                remote.close()
        rows.append((n, results))
    print(f"{'N':>3}  {'implementation':<22} {'us/env-step':>11} {'vs Async':>9} {'vs Sync':>8}")
    for n, results in rows:
        for name, value in results.items():
            if value is None:
                print(f"{n:>3}  {name:<22} {'(not installed)':>11}")
                continue
            print(f"{n:>3}  {name:<22} {value:>11.2f} {value / results['AsyncVectorEnv']:>8.2f}x "
                  f"{value / results['SyncVectorEnv']:>7.2f}x")
    for n, results in rows:
        best = min(v for k, v in results.items() if k.startswith("Remote") and v is not None)
        if n == 8:
            ratio = best / results["AsyncVectorEnv"]
            print(f"target N=8, <= 0.25x AsyncVectorEnv: {ratio:.2f}x "
                  f"{'met' if ratio <= 0.25 else 'NOT met'}")
        if n == 64:
            ratio = best / results["SyncVectorEnv"]
            print(f"target N=64, <= 3x SyncVectorEnv: {ratio:.2f}x "
                  f"{'met' if ratio <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
