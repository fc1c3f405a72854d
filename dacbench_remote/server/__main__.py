"""`python -m dacbench_remote.server`: what every image's runscript starts (and the local runtime)."""

from __future__ import annotations

import argparse
import os
import sys

from .serve import serve
from .zygote import zygote


def main(argv: list[str] | None = None) -> None:
    """`python -m dacbench_remote.server`: serve on --socket (or run a zygote) until stopped."""
    parser = argparse.ArgumentParser(
        prog="python -m dacbench_remote.server",
        description="Serve benchmarks and environments to dacbench-remote clients over a UNIX "
        "socket (control on PATH, reset/step frames on PATH.data).",
    )
    parser.add_argument("--socket", required=True, help="path of the control socket to create")
    parser.add_argument(
        "--exit-on-stdin-close",
        action="store_true",
        help="exit when standard input reaches EOF (the host's lifeline; set by the runtimes)",
    )
    parser.add_argument(
        "--zygote",
        action="store_true",
        help="serve fork requests instead: each forks a fresh server (see dacbench_remote.server.zygote)",
    )
    args = parser.parse_args(argv)
    if args.zygote:
        zygote(args.socket, exit_on_stdin_close=args.exit_on_stdin_close)
        sys.stderr.flush()
        os._exit(0)  # the benchmark's imports would take a second to finalise, for nothing
    serve(args.socket, exit_on_stdin_close=args.exit_on_stdin_close)


if __name__ == "__main__":
    main()
