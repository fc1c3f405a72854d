#!/usr/bin/env python
"""Memory per isolated Luby environment: forked servers from one warm zygote vs a server each.

    python scripts/bench_memory.py --image /path/to/dacbench-base.sif [--counts 1 16]

PSS (proportional set size, /proc/PID/smaps_rollup) summed over the whole process tree of the
servers (bwrap, the zygote and its children; or every fresh server), each holding one Luby env
that has been reset once. Printed as a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dacbench_remote._sys.procfs import tree  # noqa: E402
from dacbench_remote._sys.sockets import socket_answers  # noqa: E402
from dacbench_remote.host.client import ServerConnection  # noqa: E402
from dacbench_remote.host.runner import RemoteRunner  # noqa: E402
from dacbench_remote.host.zygote_client import WarmServer  # noqa: E402
from dacbench_remote.runtimes import make_runtime  # noqa: E402


def pss_kib(pids) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def warm(image: Path, count: int) -> float:
    server = WarmServer(make_runtime("bwrap", image=image), ["dacbench.benchmarks"])
    server.start()
    held = []
    try:
        for n in range(count):
            child, lifeline = server.fork(f"m{n}")
            while not (Path(str(child) + ".data").exists() and socket_answers(child)):
                pass
            connection = ServerConnection(child, timeout=120)
            env = connection.make_env("Luby")
            env.reset(seed=n)
            held.append((connection, env, lifeline))
        return pss_kib(r.pid for r in tree(server.server.pid)) / 1024 / count
    finally:
        for connection, _env, lifeline in held:
            connection.close()
            os.close(lifeline)
        server.stop()


def fresh(image: Path, count: int) -> float:
    runners = []
    try:
        for n in range(count):
            runner = RemoteRunner("Luby", runtime="bwrap", image=image)
            runner.get_environment().reset(seed=n)
            runners.append(runner)
        pids = [r.pid for runner in runners for r in tree(runner.server.pid)]
        return pss_kib(pids) / 1024 / count
    finally:
        for runner in runners:
            runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="a Luby (DACBench) .sif")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    print(f"PSS per isolated Luby environment (MiB), bwrap, image {args.image.name}")
    print(f"{'concurrent':>10} {'warm (forked)':>14} {'server each':>12} {'ratio':>6}")
    for count in args.counts:
        w, f = warm(args.image, count), fresh(args.image, count)
        print(f"{count:>10} {w:>14.1f} {f:>12.1f} {f / w:>6.1f}")


if __name__ == "__main__":
    main()
