"""The `dacbench-remote` command: thin wrappers that call the library and print results."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from . import __version__
from .errors import BadConfig, DacbenchRemoteError

EPILOG_RUN = """examples:
  dacbench-remote run FunctionApproximation --runtime bwrap --build --episodes 3
  dacbench-remote run gymnasium:CartPole-v1 --agent random --episodes 5 --seed 1
  dacbench-remote run Luby --config '{"cutoff": 50}' --runtime local --out results/
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except DacbenchRemoteError as exc:
        print(f"dacbench-remote: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dacbench-remote: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dacbench-remote",
        description="Run DACBench benchmarks and gymnasium environments inside rootless "
        "containers, driven by a local agent.",
    )
    parser.add_argument("--version", action="version", version=f"dacbench-remote {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run episodes of a benchmark and print a results table",
        description="Start the benchmark's server (in a container or a subprocess), run an agent "
        "for N episodes (episode i resets with seed+i), print a table, and append one JSON line "
        "per episode to OUT/results.jsonl.",
        epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("benchmark", help="DACBench name (Luby, ToySGD, ...), gymnasium:ID, or module:attr")
    run.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    run.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    run.add_argument("--agent", default="random",
                     help="random, static, static:ACTION_JSON, or module:factory (default random)")
    run.add_argument("--runtime", default="local", choices=["local", "bwrap", "apptainer", "auto"],
                     help="where the server runs (default local: a subprocess, no container)")
    run.add_argument("--experiment", help="experiment identifier that pins the image, e.g. exp:0.01")
    run.add_argument("--image", type=Path, help="use this .sif instead of the catalog's image")
    run.add_argument("--build", action="store_true",
                     help="build the image from its recipe if it is not cached and cannot be downloaded")
    run.add_argument("--config", help="DACBench config: JSON text or a path to a JSON file")
    run.add_argument("--python", help="interpreter for the local runtime (e.g. a venv's python)")
    run.add_argument("--out", type=Path, default=Path("results"),
                     help="directory for results.jsonl (default ./results)")
    run.add_argument("--startup-timeout", type=float, default=60.0, help="seconds (default 60)")
    run.set_defaults(handler=cmd_run)
    return parser


def load_config_argument(text: str | None):
    """`--config` takes JSON text or the path of a JSON file."""
    if text is None:
        return None
    path = Path(text)
    if not text.lstrip().startswith(("{", "[")) and path.exists():
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadConfig(f"--config is neither a JSON object nor a JSON file: {exc}") from exc


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import RemoteRunner

    results_path = args.out / "results.jsonl"
    runner = RemoteRunner(
        args.benchmark, config=load_config_argument(args.config), runtime=args.runtime,
        experiment=args.experiment, image=args.image, python=args.python, build=args.build,
        results_path=results_path, startup_timeout=args.startup_timeout,
    )
    with runner:
        print(f"started {args.benchmark} ({runner.runtime.name} runtime) in "
              f"{runner.startup_seconds:.2f} s", file=sys.stderr)
        results = runner.run(args.agent, args.episodes, seed=args.seed)
    print_table(
        ["episode", "seed", "return", "length", "seconds"],
        [[r.episode, r.seed, f"{r.return_:.4f}", r.length, f"{r.wall_time:.3f}"] for r in results],
    )
    returns = [r.return_ for r in results]
    spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
    print(f"\nmean return {statistics.fmean(returns):.4f} ± {spread:.4f} over {len(results)} "
          f"episodes; results appended to {results_path}")
    return 0


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
