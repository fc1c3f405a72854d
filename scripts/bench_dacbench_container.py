"""Per-step cost and returned dtypes of DACBench's own container path, against ours and the floor.

    python scripts/bench_dacbench_container.py [--steps N] [--repeats N]

Needs DACBench 0.5.6 and Pyro4 in this venv (`pip install 'dacbench==0.5.6' Pyro4`). DACBench's
path is its own code, run without a container: `dacbench.container.remote_env`'s
RemoteEnvironmentServer in a Pyro4 daemon on a UNIX socket (multiplex server, as its
remote_runner sets it up), and the client's call `json_decode(proxy.step(json_encode(action)))`.
(DACBench's RemoteEnvironmentClient.step unpacks four values, gym's old API, so it fails on any
gymnasium env; the call is the same without that unpacking.) Ours is RemoteRunner with the local
runtime; the floor is an env in a child process behind a socketpair with pickle 5
(scripts/bench_overhead.py), all measured in the same run. Also prints the dtype each path
returns for the observation, against the in-process env's. A report, never a test assertion.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from bench_overhead import CASES, actions_for, drive, floor, remote  # noqa: E402

from dacbench_remote import RemoteRunner  # noqa: E402
from dacbench_remote.server.envs import create_env  # noqa: E402

SERVER = """
import sys
import Pyro4
sys.path.insert(0, sys.argv[3])
from dacbench.container.remote_env import RemoteEnvironmentServer
from dacbench_remote.server.envs import create_env
Pyro4.config.SERVERTYPE = "multiplex"
daemon = Pyro4.Daemon(unixsocket=sys.argv[1])
daemon.register(RemoteEnvironmentServer(create_env(sys.argv[2])), "env")
print("ready", flush=True)
daemon.requestLoop()
"""


class DacbenchContainerEnv:
    """DACBench's client side of its container path, step and reset as its client calls them."""

    def __init__(self, target: str, directory: Path):
        import Pyro4
        from dacbench.container.remote_env import json_decode, json_encode

        self.encode, self.decode = json_encode, json_decode
        path = directory / "dacbench.sock"
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, str(path), target,
                                         str(REPO)], stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"DACBench's Pyro4 server did not start for {target}")
        self.proxy = Pyro4.Proxy(f"PYRO:env@./u:{path}")

    def step(self, action):
        return self.decode(self.proxy.step(self.encode(action)))

    def reset(self):
        return self.decode(self.proxy.reset())

    def close(self) -> None:
        self.proxy._pyroRelease()
        self.process.terminate()
        self.process.wait(10)


def dacbench_container(target: str, steps: int) -> tuple[float, str]:
    """Seconds per step through DACBench's path, and the dtype of the observation it returns."""
    with tempfile.TemporaryDirectory(prefix="dacbr-bench-") as directory:
        env = DacbenchContainerEnv(target, Path(directory))
        try:
            env.reset()
            observation = env.step(actions_for(create_env(target), 1)[0])[0]
            per_step = drive(env.step, env.reset, actions_for(create_env(target), steps))
        finally:
            env.close()
    return per_step, np.asarray(observation).dtype.name


def our_dtype(target: str) -> str:
    """The dtype of the observation our client returns for the first step."""
    with RemoteRunner(target, runtime="local", results_path=None) as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        return np.asarray(env.step(actions_for(env, 1)[0])[0]).dtype.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each measurement")
    args = parser.parse_args()
    try:
        import dacbench.container.remote_env  # noqa: F401
        import Pyro4  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{exc}: pip install 'dacbench==0.5.6' Pyro4")
    print(f"{time.strftime('%Y-%m-%d')}, best of {args.repeats}, {args.steps} steps each")
    print(f"{'env':28} {'floor':>9} {'ours':>9} {'dacbench':>10} {'ours/floor':>11} "
          f"{'dacbench/floor':>15}  observation dtype: in-process / ours / dacbench")
    for label, target in CASES:
        env = create_env(target)
        env.reset(seed=0)
        expected = np.asarray(env.step(actions_for(env, 1)[0])[0]).dtype.name
        base, ours, theirs, theirs_dtype = float("inf"), float("inf"), float("inf"), "?"
        for _ in range(args.repeats):  # interleaved: a noisy VM slows stretches, not single runs
            base = min(base, floor(target, args.steps))
            ours = min(ours, remote(target, args.steps)[0])
            seconds, theirs_dtype = dacbench_container(target, args.steps)
            theirs = min(theirs, seconds)
        print(f"{label:28} {base * 1e6:7.1f}µs {ours * 1e6:7.1f}µs {theirs * 1e6:8.1f}µs "
              f"{ours / base:10.2f}x {theirs / base:14.2f}x  {expected} / {our_dtype(target)} / "
              f"{theirs_dtype}")


if __name__ == "__main__":
    main()
