"""Per env-step cost of RemoteVectorEnv (K=1, 2 servers) vs SyncVectorEnv, AsyncVectorEnv, SB3.

CartPole-v1 (a (4,) float32 observation), NextStep autoreset, local runtime. Prints a table
with ratios vs AsyncVectorEnv and vs SyncVectorEnv measured in the same run, and whether the
targets (N=8: <= 0.25x Async; N=64: <= 3x Sync) are met.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

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


# The test setup keeps SB3 (and torch) in a venv of its own (scripts/install-deps.sh --test).
SB3_PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "sb3" / "bin" / "python"


def sb3_subproc(n: int, steps: int) -> float | None:
    """SB3's SubprocVecEnv, here if SB3 is importable, else in the SB3 venv if there is one."""
    try:
        from stable_baselines3.common.vec_env import SubprocVecEnv
    except ImportError:
        if not SB3_PYTHON.exists():
            return None
        out = subprocess.run([str(SB3_PYTHON), __file__, "--sb3-only", str(n), str(steps)],
                             capture_output=True, text=True, check=True).stdout
        return float(out.split()[-1])
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
    if sys.argv[1:2] == ["--sb3-only"]:  # run by sb3_subproc in the SB3 venv
        print(sb3_subproc(int(sys.argv[2]), int(sys.argv[3])))
        return
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
