"""Time from `RemoteRunner(...)` to the first step result, bwrap runtime, cold and warm cache.

Cold = an empty extraction cache (the image is hashed and unpacked, or squashfuse-mounted where
/dev/fuse is usable); warm = the unpacked image is reused. Each measurement runs in a fresh
process, as a user's script would. Compare with the local runtime (no container) measured in
the same run. Run as the user you care about, e.g.
    runuser -u someuser -- /path/to/venv/bin/python scripts/bench_first_step.py IMAGE.sif
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import sys, time
from dacbench_remote import RemoteRunner
imported = time.perf_counter()
runtime, image, benchmark = sys.argv[1:4]
with RemoteRunner(benchmark, runtime=runtime, image=image or None) as runner:
    env = runner.get_environment()
    env.reset(seed=0)
    env.step(env.action_space.sample())
    first_step = time.perf_counter()
print(first_step - imported)
"""


def measure(runtime: str, image: str, benchmark: str, cache_home: str) -> float:
    """Seconds in a fresh process; NaN for the local runtime where the benchmark is not
    installed on the host (DACBench lives in the image)."""
    env = dict(os.environ, XDG_CACHE_HOME=cache_home)
    done = subprocess.run([sys.executable, "-c", CHILD, runtime, image, benchmark], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 and runtime == "local" and "UnknownBenchmark" in done.stderr:
        return float("nan")
    if done.returncode != 0:
        sys.exit(f"measurement failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="a .sif built from recipes/dacbench-base.def")
    parser.add_argument("--benchmark", action="append",
                        help="repeatable; default: gymnasium:CartPole-v1 (the container's own "
                        "cost) and Luby (adds importing DACBench, about 2 s even in-process)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    benchmarks = args.benchmark or ["gymnasium:CartPole-v1", "Luby"]
    print(f"RemoteRunner(...) to the first step result, median of {args.repeats} fresh processes")
    print(f"{'benchmark':24} {'bwrap cold':>11} {'bwrap warm':>11} {'local':>8} {'warm/local':>11}")
    for benchmark in benchmarks:
        rows: dict[str, list[float]] = {"cold": [], "warm": [], "local": []}
        with tempfile.TemporaryDirectory() as warm_home:
            measure("bwrap", args.image, benchmark, warm_home)  # fill the warm cache
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as cold_home:
                    rows["cold"].append(measure("bwrap", args.image, benchmark, cold_home))
                rows["warm"].append(measure("bwrap", args.image, benchmark, warm_home))
                rows["local"].append(measure("local", "", benchmark, warm_home))
        cold, warm, local = (statistics.median(rows[k]) for k in ("cold", "warm", "local"))
        print(f"{benchmark:24} {cold:9.2f} s {warm:9.2f} s {local:6.2f} s {warm / local:10.1f}x")


if __name__ == "__main__":
    main()
