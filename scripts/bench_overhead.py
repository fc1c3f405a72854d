"""Per-step cost of a remote env against in-process and a pickle-over-socketpair floor.

Run: python scripts/bench_overhead.py [--steps N]. The floor is an env in a child process
behind an AF_UNIX socketpair with pickle protocol 5, measured in the same run; the target is
remote ≤ 1.5x floor. Prints a table; it is a report, never an assertion.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import socket
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from dacbench_remote import RemoteRunner  # noqa: E402
from dacbench_remote.runtimes.local import LocalRuntime  # noqa: E402
from dacbench_remote.server.envs import create_env  # noqa: E402
from dacbench_remote.wire.channel import recv_frame, send_frame  # noqa: E402

CASES = [
    ("(4,) float32: CartPole-v1", "gymnasium:CartPole-v1"),
    ("(84,84,3) uint8 image", "tests.envs:make_image_env"),
    ("FunctionApproximation", "FunctionApproximation"),
]


def actions_for(env, count: int) -> list:
    env.action_space.seed(0)
    return [env.action_space.sample() for _ in range(count)]


def drive(step, reset, actions) -> float:
    """Seconds per step over `actions`, resetting when an episode ends."""
    reset()
    started = time.perf_counter()
    for action in actions:
        result = step(action)
        if result[2] or result[3]:
            reset()
    return (time.perf_counter() - started) / len(actions)


def in_process(target: str, steps: int) -> float:
    env = create_env(target)
    return drive(env.step, lambda: env.reset(seed=0), actions_for(env, steps))


def _floor_child(sock: socket.socket, other_end: socket.socket, target: str) -> None:
    other_end.close()  # inherited through fork; holding it would hide the parent's EOF
    env = create_env(target)
    while True:
        try:
            request = pickle.loads(recv_frame(sock)[1])
        except ConnectionError:
            return
        result = env.reset(seed=0) if request is None else env.step(request)
        send_frame(sock, pickle.dumps(result, protocol=5))


def floor(target: str, steps: int) -> float:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    process = multiprocessing.get_context("fork").Process(target=_floor_child, args=(child, parent, target))
    process.start()
    child.close()

    def call(request):
        send_frame(parent, pickle.dumps(request, protocol=5))
        return pickle.loads(recv_frame(parent)[1])

    actions = actions_for(create_env(target), steps)
    try:
        return drive(call, lambda: call(None), actions)
    finally:
        parent.close()
        process.join(5)


def remote(target: str, steps: int) -> tuple[float, float]:
    with RemoteRunner(target, runtime=LocalRuntime()) as runner:
        env = runner.get_environment()
        per_step = drive(env.step, lambda: env.reset(seed=0), actions_for(env, steps))
        return per_step, runner.startup_seconds or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5, help="best of N for each measurement")
    args = parser.parse_args()
    rows = []
    for label, target in CASES:
        try:
            create_env(target)
        except Exception as exc:  # e.g. DACBench not installed: report, measure the rest
            print(f"skipping {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        # Interleaved, best of N: a noisy VM slows whole stretches, not single measurements.
        local, base, ours = float("inf"), float("inf"), float("inf")
        for _ in range(args.repeats):
            local = min(local, in_process(target, args.steps))
            base = min(base, floor(target, args.steps))
            ours = min(ours, remote(target, args.steps)[0])
        rows.append((label, local * 1e6, base * 1e6, ours * 1e6, ours / base))
    print(f"{'env':28} {'in-process':>11} {'floor':>9} {'remote':>9} {'remote/floor':>13}")
    for label, local, base, ours, ratio in rows:
        verdict = "ok" if ratio <= 1.5 else "ABOVE TARGET"
        print(f"{label:28} {local:9.1f}µs {base:7.1f}µs {ours:7.1f}µs {ratio:11.2f}x  {verdict}")


if __name__ == "__main__":
    main()
