"""The `dacbench-remote` command: thin wrappers that call the library and print results."""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from ._sys.files import sha256_file
from .config import RUNTIME_NAMES, load_config
from .errors import BadConfig, CorruptImage, DacbenchRemoteError, ImageNotFound, RecipeError
from .host.baseline_suite import (
    DEFAULT_EPISODES,
    DEFAULT_SEEDS,
    Selection,
    load_catalog,
    plan,
    run_suite,
)
from .host.repeat import repeat_run
from .host.runner import RemoteRunner
from .host.servers import cleanup_stale, list_servers
from .images.build import build_image
from .images.cache import BUILT_LOCALLY, ImageCache
from .images.catalog import Catalog, ImageVersion
from .images.manifest import MANIFEST_NAME, package_versions
from .images.publish import publish
from .images.recipe import parse_recipe, template_variables
from .images.sif import SifImage
from .images.verify import default_build, report_lines, verify_version
from .sweeps import cancel, report, run_sweep, status
from .sweeps.executors import EXECUTORS

SWEEP_DIR_HELP = "the directory `sweep run` writes (the spec's `dir`, else its `name`, beside it)"

EPILOG_RUN = """examples:
  dacbench-remote run FunctionApproximation --episodes 3       # in its image, rootless
  dacbench-remote run Luby --experiment exp:0.01 --no-build    # only a cached or downloadable image
  dacbench-remote run gymnasium:CartPole-v1 --runtime local --episodes 5 --seed 1
  dacbench-remote run Luby --config '{"cutoff": 50}' --out results/
  dacbench-remote run Luby --agent dacbench:optimal --episodes 10   # DACBench's, next to the env

The image comes from the cache, else from the catalog's sources (sha256-verified), else it is
built from the packaged recipe (progress on stderr); --no-build forbids building.
"""

EPILOG_BASELINES = """examples:
  dacbench-remote baselines --benchmarks LubyBenchmark FunctionApproximationBenchmark --optimal
  dacbench-remote baselines --benchmarks Luby --random --fixed_random 3 --seeds 0 1 2
  dacbench-remote baselines --benchmarks CMAESBenchmark --dyna_baseline --num_episodes 5
  dacbench-remote baselines --benchmarks Luby --static --actions 1 2 --experiment exp:dacbench-0.3.0

What it writes: OUTDIR/BENCHMARK/EXPERIMENT_SEED/ with PerformanceTrackingWrapper.jsonl,
agent.json and benchmark.json, as DACBench's Logger writes them (EXPERIMENT_SEED is random_S,
random_fixedF_S, static_A_S, optimal_S or csa_S), so dacbench.logger.load_logs and
log2dataframe read them; and every episode, with its provenance, in OUTDIR/results.jsonl.

Which policies exist: --optimal for LubyBenchmark, FunctionApproximationBenchmark and
FastDownwardBenchmark; --dyna_baseline for CMAESBenchmark (CSA) and SGDBenchmark (cosine
annealing). Asked for a benchmark without it, the command refuses before anything runs.

Seeding: run S builds its env with seed S (get_benchmark(seed=S), as DACBench does) and seeds
the global RNGs and the action space with S, so random baselines repeat (DACBench leaves the
action space unseeded). Episodes reset without a seed, as in DACBench's loop.

The same runs from Python: RemoteRunner("Luby").run("dacbench:optimal", 10, seed=0).
Details: docs/baselines.md
"""

EPILOG_PUBLISH = """examples:
  dacbench-remote publish base.sif oras://registry.example.org/dacbench/base:0.02
  dacbench-remote publish base.sif oras://registry.example.org/dacbench/base:0.02 \\
      --experiment exp:0.02 --catalog benchmarks/dacbench-base.toml
  dacbench-remote publish base.sif oras://127.0.0.1:5000/dacbench/base:test   # plain HTTP

Credentials, first found wins: $DACBENCH_REMOTE_REGISTRY_USERNAME/_PASSWORD,
$APPTAINER_DOCKER_USERNAME/_PASSWORD, ~/.docker/config.json (docker login),
~/.apptainer/docker-config.json (apptainer registry login), ~/.apptainer/remote.yaml.
Registries that hand out anonymous tokens need none. Secrets are never printed.
Pull it back with `dacbench-remote pull BENCHMARK@EXPERIMENT` or `apptainer pull oras://...`.
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
    for add_command in (_add_run, _add_baselines, _add_list, _add_pull, _add_cache, _add_build, _add_publish,
                        _add_inspect, _add_ps_and_cleanup, _add_sweep, _add_config):
        add_command(commands)
    return parser


def _add_run(commands) -> None:
    """`run`: episodes of one benchmark in a container by default, or `--repeat`."""
    run = commands.add_parser(
        "run", help="run episodes of a benchmark and print a results table",
        description="Start the benchmark's server (in a container or a subprocess), run an agent "
        "for N episodes (episode i resets with seed+i), print a table, and append one JSON line "
        "per episode to OUT/results.jsonl.",
        epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("benchmark", nargs="?",
                     help="DACBench name (Luby, ToySGD, ...), gymnasium:ID, or module:attr")
    run.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    run.add_argument("--seed", type=_seed_argument, default=0,
                     help="episode i resets with SEED + i (default 0); --seed none resets "
                     "without a seed, as DACBench's run_benchmark does")
    run.add_argument("--agent", default="random",
                     help="random, static, static:ACTION_JSON, module:factory, or one of "
                     "DACBench's baselines, run next to the env: dacbench:random[:FIXED], "
                     "dacbench:static:ACTION, dacbench:optimal, dacbench:dynamic (default random)")
    _add_server_options(run)
    run.add_argument("--config", help="DACBench config: JSON text or a path to a JSON file")
    run.add_argument("--out", type=Path, default=Path("results"),
                     help="directory for results.jsonl (default ./results)")
    run.add_argument("--repeat", type=Path, metavar="RESULTS.jsonl",
                     help="repeat a recorded run exactly (same benchmark, config, agent, seeds, "
                     "experiment and runtime) and compare the returns; BENCHMARK may be omitted")
    run.add_argument("--run-id", help="with --repeat: which run of the file (default: the last)")
    run.set_defaults(handler=cmd_run)


def _add_server_options(parser) -> None:
    """Where the servers run and which image: the options of `run` and `baselines`."""
    parser.add_argument("--runtime", choices=RUNTIME_NAMES,
                        help="where the server runs: auto (Apptainer if installed, else "
                        "bubblewrap), apptainer, bwrap, or local (a plain subprocess, no "
                        "container); default: default_runtime of `dacbench-remote config` (auto "
                        "unless set)")
    parser.add_argument("--experiment",
                        help="experiment identifier that pins the image, e.g. exp:0.01")
    parser.add_argument("--image", type=Path, help="use this .sif instead of the catalog's image")
    parser.add_argument("--build", action=argparse.BooleanOptionalAction, default=True,
                        help="build the image from its packaged recipe if it is neither cached "
                        "nor downloadable (default: build; --no-build forbids it)")
    parser.add_argument("--python", help="interpreter for the local runtime (e.g. a venv's python)")
    parser.add_argument("--startup-timeout", type=float, default=60.0,
                        help="seconds (default 60)")


def _add_baselines(commands) -> None:
    """`baselines`: `python -m dacbench.run_baselines` with every run next to its env."""
    baselines = commands.add_parser(
        "baselines", help="DACBench's baselines (run_baselines) next to the env, in its image",
        description="The container version of `python -m dacbench.run_baselines`, with the same "
        "options: DACBench's random, static, optimal and dynamic baselines, built with "
        "DACBench's own agents and policies on the real env inside the benchmark's image (the "
        "policies read the env's internals), through DACBench's run_benchmark loop, "
        "PerformanceTrackingWrapper and Logger. One server per benchmark; progress on stderr.",
        epilog=EPILOG_BASELINES, formatter_class=argparse.RawDescriptionHelpFormatter)
    dacbench = baselines.add_argument_group("DACBench's run_baselines options")
    dacbench.add_argument("--outdir", type=Path, default=Path("output"),
                          help="output directory (default ./output)")
    dacbench.add_argument("--benchmarks", nargs="+", metavar="BENCHMARK",
                          help="e.g. LubyBenchmark (or Luby); default: every DACBench benchmark "
                          "of the catalog at the experiment, skipping those without a "
                          "requested policy")
    dacbench.add_argument("--num_episodes", type=int, default=DEFAULT_EPISODES,
                          help=f"episodes per run (default {DEFAULT_EPISODES})")
    dacbench.add_argument("--random", action="store_true",
                          help="random policy (DACBench's DynamicRandomAgent); see --fixed_random")
    dacbench.add_argument("--fixed_random", type=int, default=0, metavar="N",
                          help="keep each random action for N steps (default 0); 0 and 1 "
                          "draw a new one every step")
    dacbench.add_argument("--static", action="store_true",
                          help="static policy: one run per action of --actions")
    dacbench.add_argument("--actions", nargs="+", type=_action_argument, metavar="A",
                          help="the static actions: numbers (read as floats, as DACBench does; "
                          "ints for FastDownward), or JSON for vector and dict actions")
    dacbench.add_argument("--optimal", action="store_true",
                          help="optimal policy (LubyBenchmark, FunctionApproximationBenchmark, "
                          "FastDownwardBenchmark)")
    dacbench.add_argument("--dyna_baseline", action="store_true",
                          help="dynamic baseline (CMAESBenchmark: CSA; SGDBenchmark: cosine "
                          "annealing)")
    dacbench.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS),
                          metavar="S", help="one run per seed (default "
                          f"{list(DEFAULT_SEEDS)})")
    _add_server_options(baselines.add_argument_group("where the benchmarks run"))
    baselines.set_defaults(handler=cmd_baselines)


def _action_argument(text: str):
    """A static action as DACBench's CLI reads it (a float), else JSON (vectors, dicts)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor JSON") from None


def _add_list(commands) -> None:
    """`list`: the catalog's benchmarks and experiment versions."""
    listing = commands.add_parser(
        "list", help="benchmarks in the catalog, their experiment versions and what is cached",
        description="List every benchmark of the catalog (packaged plus your catalog_dirs) with "
        "its experiment identifiers, the default one, where its image comes from (the source "
        "it downloads from; else build,pinned: built from its recipe and checked against the "
        "pinned sha256; build,unpinned: built locally, no pin) and whether it is in the cache "
        "(and built here).")
    listing.set_defaults(handler=cmd_list)


def _add_pull(commands) -> None:
    """`pull`: fetch (or build) a benchmark's image into the cache."""
    pull = commands.add_parser(
        "pull", help="fetch a benchmark's image into the cache (download and verify, or build)",
        description="Download BENCHMARK's image for EXPERIMENT (default: the catalog's default "
        "version), verify its sha256 and keep it in the cache. With --build, build it from its "
        "recipe when no verified download exists.")
    pull.add_argument("target", metavar="BENCHMARK[@EXPERIMENT]", help="e.g. Luby@exp:0.01")
    pull.add_argument("--build", action="store_true", help="build from the recipe if needed")
    pull.set_defaults(handler=cmd_pull)


def _add_cache(commands) -> None:
    """`cache ls|verify|prune`: the image cache."""
    cache = commands.add_parser("cache", help="inspect, verify or prune the image cache",
                                description="Manage the image cache (location: `dacbench-remote "
                                "config`).")
    cache_commands = cache.add_subparsers(title="actions", metavar="ACTION")
    cache_ls = cache_commands.add_parser("ls", help="list cached images and partial downloads")
    cache_ls.set_defaults(handler=cmd_cache_ls)
    cache_verify = cache_commands.add_parser("verify", help="re-hash every cached image")
    cache_verify.add_argument("--remove", action="store_true", help="delete images that fail")
    cache_verify.set_defaults(handler=cmd_cache_verify)
    cache_prune = cache_commands.add_parser(
        "prune", help="remove partial downloads and images no longer in the catalog")
    cache_prune.add_argument("--all", action="store_true", help="empty the cache completely")
    cache_prune.set_defaults(handler=cmd_cache_prune)


def _add_build(commands) -> None:
    """`build`: a recipe into a .sif, or `--verify` a catalog pin."""
    build = commands.add_parser(
        "build", help="build a .sif image from a recipe (Apptainer if installed, else our builder)",
        description="Build RECIPE (an Apptainer .def file) into OUT.sif. With apptainer or "
        "singularity on PATH this runs `apptainer build --fakeroot`; without, the project's own "
        "builder bootstraps Debian with mmdebstrap, runs %%post, squashes the root filesystem and "
        "writes a SIF with Apptainer's layout. The Debian mirror and pip index come from this "
        "machine's apt and pip configuration unless given with --build-arg.",
        epilog="examples:\n  dacbench-remote build recipes/dacbench-base.def -o dacbench-base.sif\n"
        "  dacbench-remote build --verify Luby@exp:0.01     # does the pin still reproduce?\n\n"
        "Our builder is reproducible: the same recipe, files and package versions give the same\n"
        "file, byte for byte (set SOURCE_DATE_EPOCH to choose the build's timestamp; by\n"
        "default it is the newest Debian changelog of the package set).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("recipe", type=Path, nargs="?", help="the .def file")
    build.add_argument("-o", "--output", type=Path, help="the .sif to write (required with RECIPE)")
    build.add_argument("--verify", metavar="BENCHMARK[@EXPERIMENT]",
                       help="rebuild the catalog version's image from its recipe (our builder) "
                       "and compare it with the catalog's pinned sha256; on a mismatch, list "
                       "the files, packages and objects that differ (exit 1)")
    build.add_argument("--against", type=Path, metavar="PINNED.sif",
                       help="with --verify: a copy of the pinned image to list differing files "
                       "against, where the cache has none and the version has no sources")
    build.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE",
                       help="value for a {{ NAME }} template variable (repeatable), e.g. mirror=URL")
    build.add_argument("--context", type=Path,
                       help="where relative %%files sources are read from (default: current directory)")
    build.add_argument("--builder", choices=["auto", "apptainer", "native"], default="auto",
                       help="auto: apptainer if installed, else native (default auto)")
    build.add_argument("--workdir", type=Path, help="directory for temporary files (needs ~1 GB)")
    build.add_argument("--notest", action="store_true", help="do not run the recipe's %%test")
    build.set_defaults(handler=cmd_build)


def _add_publish(commands) -> None:
    """`publish`: push a .sif to an OCI registry and catalog it."""
    publish = commands.add_parser(
        "publish", help="push a .sif to an OCI registry (as apptainer push does) and catalog it",
        description="Push IMAGE to an OCI registry in pure Python, streamed in chunks, in the "
        "layout `apptainer push`/`pull oras://` use (so either tool can pull it). With "
        "--experiment and --catalog, record it there: image name, sha256, and the reference as a "
        "source. An experiment id that already pins another sha256 is refused before pushing.",
        epilog=EPILOG_PUBLISH, formatter_class=argparse.RawDescriptionHelpFormatter)
    publish.add_argument("image", type=Path, help="the .sif file to push")
    publish.add_argument("reference", metavar="oras://REGISTRY/REPO:TAG",
                         help="where to push it, e.g. oras://registry.example.org/dacbench/base:0.02")
    publish.add_argument("--experiment", help="experiment id to record it as, e.g. exp:0.02")
    publish.add_argument("--catalog", type=Path,
                         help="catalog file (benchmarks/NAME.toml) to record it in; created from "
                         "the image's labels if missing")
    publish.add_argument("--insecure", action="store_true",
                         help="allow plain HTTP to a registry that is not on this machine "
                         "(loopback registries always may use it)")
    publish.set_defaults(handler=cmd_publish)


def _add_inspect(commands) -> None:
    """`inspect`: what a .sif holds."""
    inspect = commands.add_parser(
        "inspect", help="show what a .sif image holds: benchmarks, versions, labels, size, sha256",
        description="Read a SIF image (pure Python, no Apptainer needed) and print its benchmarks "
        "and versions (from its labels), the build manifest of images our builder made (recipe "
        "and inputs digests, build epoch, DACBench/numpy/gymnasium versions), all labels, "
        "objects, size and sha256.")
    inspect.add_argument("image", type=Path, help="path of a .sif file")
    inspect.add_argument("--deffile", action="store_true", help="also print the recipe it was built from")
    inspect.add_argument("--packages", action="store_true",
                         help="also list every Debian and Python package of the build manifest")
    inspect.set_defaults(handler=cmd_inspect)


def _add_ps_and_cleanup(commands) -> None:
    """`ps` and `cleanup`: this user's servers and what crashed hosts left."""
    ps = commands.add_parser("ps", help="list servers started by this user",
                             description="List running dacbench-remote servers of this user: pid, "
                             "runtime, id (attach with socket_id=ID), age, whether the socket "
                             "answers, whether the host process that started them is gone "
                             "(orphaned), and the socket.")
    ps.set_defaults(handler=cmd_ps)
    cleanup = commands.add_parser(
        "cleanup", help="stop orphaned servers, remove dead sockets and stale mounts",
        description="Stop servers whose host process is gone, remove sockets nobody listens on, "
        "unmount stale squashfuse mounts and unfinished extractions of this user.")
    cleanup.set_defaults(handler=cmd_cleanup)


def _add_sweep(commands) -> None:
    """`sweep run|status|report|cancel`, and the top-level aliases `status`/`report`."""

    sweep = commands.add_parser(
        "sweep", help="run many trials from a sweep.toml, locally or as a Slurm job array",
        description="Experiments = benchmarks x agents x seeds (x configs): each trial runs in its "
        "own server/container. Re-running resumes: finished trials are skipped.")
    sweep_commands = sweep.add_subparsers(title="actions", metavar="ACTION")
    sweep_run = sweep_commands.add_parser("run", help="run (or resume) the sweep described by SPEC")
    sweep_run.add_argument("spec", type=Path, help="path of a sweep.toml")
    sweep_run.add_argument("--executor", choices=EXECUTORS, help="override the spec's executor")
    sweep_run.add_argument("--workers", type=int, help="local executor: parallel trials (default: cores)")
    sweep_run.add_argument("--no-resume", action="store_true", help="run every trial again")
    sweep_run.add_argument("--retry-failed", action="store_true",
                           help="on resume, also rerun failed and timed-out trials")
    sweep_run.add_argument("--dir", type=Path, help="sweep directory (default: from the spec)")
    sweep_run.set_defaults(handler=cmd_sweep_run)
    _add_sweep_status(sweep_commands, SWEEP_STATUS_HELP)
    _add_sweep_report(sweep_commands, SWEEP_REPORT_HELP)
    sweep_cancel = sweep_commands.add_parser(
        "cancel", help="cancel its Slurm jobs and stop every container the sweep started")
    sweep_cancel.add_argument("sweep_dir", type=Path, help=SWEEP_DIR_HELP)
    sweep_cancel.set_defaults(handler=cmd_sweep_cancel)
    # The first spelling, kept: `status` and `report` at the top are `sweep status|report`.
    _add_sweep_status(commands, f"alias of `sweep status`: {SWEEP_STATUS_HELP}")
    _add_sweep_report(commands, f"alias of `sweep report`: {SWEEP_REPORT_HELP}")


def _add_config(commands) -> None:
    """`config`: the configuration and where each value comes from."""
    config = commands.add_parser("config", help="show the configuration and where each value comes from",
                                 description="Print the config file path, cache and catalog "
                                 "directories, default runtime, binds and env, each with its source "
                                 "(default, config file or environment variable).")
    config.set_defaults(handler=cmd_config)


SWEEP_STATUS_HELP = "progress of a sweep (while it runs, or after)"
SWEEP_REPORT_HELP = "summary of a sweep (mean/std return per benchmark x agent) and PNG plots"


def _add_sweep_status(commands, help_text: str) -> None:
    status = commands.add_parser("status", help=help_text)
    status.add_argument("sweep_dir", type=Path, help=SWEEP_DIR_HELP)
    status.set_defaults(handler=cmd_sweep_status)


def _add_sweep_report(commands, help_text: str) -> None:
    report = commands.add_parser("report", help=help_text)
    report.add_argument("sweep_dir", type=Path, help=SWEEP_DIR_HELP)
    report.add_argument("--no-plot", action="store_true", help="do not write plots")
    report.set_defaults(handler=cmd_sweep_report)


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


def _seed_argument(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'none'") from None


def cmd_run(args: argparse.Namespace) -> int:

    if args.repeat:
        return cmd_repeat(args)
    if not args.benchmark:
        raise BadConfig("run needs a BENCHMARK (or --repeat RESULTS.jsonl)")
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
        [[r.episode, "-" if r.seed is None else r.seed, f"{r.return_:.4f}", r.length,
          f"{r.wall_time:.3f}"] for r in results],
    )
    returns = [r.return_ for r in results]
    spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
    print(f"\nmean return {statistics.fmean(returns):.4f} ± {spread:.4f} over {len(results)} "
          f"episodes; results appended to {results_path}")
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    """Plan (refusing what cannot run), run every baseline, print a summary table."""
    if args.num_episodes < 1:
        raise BadConfig(f"--num_episodes must be at least 1, got {args.num_episodes}")
    if args.fixed_random < 0:
        raise BadConfig(f"--fixed_random must be 0 or more, got {args.fixed_random}")
    selection = Selection(random=args.random, fixed_random=args.fixed_random,
                          static=args.static, actions=tuple(args.actions or ()),
                          optimal=args.optimal, dynamic=args.dyna_baseline)
    runtime = args.runtime or load_config().default_runtime
    catalog = load_catalog() if args.image is None and runtime != "local" else None

    def report(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    planned = plan(args.benchmarks, selection, catalog, args.experiment,
                   lambda message: report(f"dacbench-remote: {message}"))
    summaries = run_suite(
        planned, outdir=args.outdir, seeds=args.seeds, episodes=args.num_episodes,
        runner_options=dict(experiment=args.experiment, runtime=args.runtime, image=args.image,
                            python=args.python, build=args.build,
                            startup_timeout=args.startup_timeout),
        report=report)
    rows = []
    for summary in summaries:
        spread = statistics.stdev(summary.returns) if len(summary.returns) > 1 else 0.0
        rows.append([summary.benchmark, summary.baseline, len(summary.seeds),
                     len(summary.returns), f"{statistics.fmean(summary.returns):.4f}",
                     f"{spread:.4f}"])
    print_table(["benchmark", "baseline", "seeds", "episodes", "mean return", "std"], rows)
    print(f"\nlogs in {args.outdir}/BENCHMARK/EXPERIMENT_SEED/ (dacbench.logger.load_logs reads "
          f"them); episodes with provenance in {args.outdir / 'results.jsonl'}")
    return 0


def cmd_repeat(args: argparse.Namespace) -> int:
    """Re-run a recorded run with its recorded parameters and compare episode by episode."""

    outcome = repeat_run(args.repeat, run_id=args.run_id, results_path=args.out / "results.jsonl")
    rows = [[o["episode"], o["seed"], f"{o['recorded']:.6g}", f"{o['repeated']:.6g}",
             "same" if o["same"] else "DIFFERENT"] for o in outcome.episodes]
    print_table(["episode", "seed", "recorded return", "repeated return", ""], rows)
    if outcome.identical:
        print(f"\nrun {outcome.run_id} repeated exactly ({len(rows)} episodes, image "
              f"{outcome.image_sha256 or 'n/a'})")
        return 0
    print(f"\nrun {outcome.run_id} did NOT repeat exactly", file=sys.stderr)
    return 1


def _catalog_and_cache():

    config = load_config()
    return Catalog.load(config.catalog_dirs), ImageCache(config.cache_dir)


STACK_LABELS = ("dacbench-version", "numpy-version", "gymnasium-version")


def cmd_list(args: argparse.Namespace) -> int:
    catalog, cache = _catalog_and_cache()
    rows = []
    for benchmark in catalog.benchmarks():
        for version in catalog.versions(benchmark):
            cached = cache.cached_path(version)
            labels = _version_labels(version, cached)
            stack = [labels.get(f"org.dacbench-remote.{name}", "-") for name in STACK_LABELS]
            stack[0] = version.dacbench or stack[0]
            rows.append([benchmark, version.experiment, "yes" if version.default else "",
                         version.family, *stack, image_origin(version),
                         _cached_entry(cache, cached)])
    print_table(["benchmark", "experiment", "default", "family", "dacbench", "numpy",
                 "gymnasium", "image", "cached"], rows)
    return 0


def image_origin(version: ImageVersion) -> str:
    """Where the version's image comes from, as the catalog says: the source it downloads from
    (scheme and host; +N more), else a build from its recipe, checked against the pinned sha256
    ("build,pinned") or not ("build,unpinned")."""
    if not version.sources:
        return "build,pinned" if version.sha256 else "build,unpinned"
    first = version.sources[0]
    parts = urlsplit(first)
    url = parts.scheme and parts.netloc
    name = f"{parts.scheme}://{parts.netloc}" if url else f"file:{Path(first).name}"
    more = len(version.sources) - 1
    return f"{name}+{more}" if more else name


def _cached_entry(cache: ImageCache, cached: Path | None) -> str:
    """The cached image's path, and whether it was built here (reproducing the pin, or not)."""
    if cached is None:
        return "-"
    try:
        record = cache.provenance(cached)
    except ImageNotFound:
        return str(cached)
    if record.get("origin") != BUILT_LOCALLY:
        return str(cached)
    reproduced = ", reproducing the pin" if record.get("reproduces_pin") else ""
    return f"{cached} (built locally{reproduced})"


def _version_labels(version, cached: Path | None) -> dict[str, str]:
    """The labels of the cached image, else those its recipe sets ({} when neither is readable).

    The cached image is what would run; the recipe says what a build would give.
    """

    try:
        if cached is not None:
            return SifImage.open(cached).labels()
        if version.recipe is not None and version.recipe.is_file():
            # Only the labels are read: template variables (the mirror) need no real value.
            placeholders = {name: "unset" for name in template_variables(version.recipe)}
            return parse_recipe(version.recipe, placeholders).labels
    except (CorruptImage, RecipeError, OSError) as exc:
        print(f"warning: cannot read the versions of {version.experiment}: {exc}",
              file=sys.stderr)
    return {}


def cmd_pull(args: argparse.Namespace) -> int:
    catalog, cache = _catalog_and_cache()
    benchmark, _, experiment = args.target.partition("@")
    resolved = catalog.resolve(benchmark, experiment or None)
    path = cache.fetch(resolved, build=args.build, progress=True)
    record = cache.provenance(path)
    print(f"{resolved.benchmark} {resolved.experiment}: {path}\nsha256 {record.get('sha256')} "
          f"({record.get('origin')})")
    return 0


def cmd_cache_ls(args: argparse.Namespace) -> int:
    _, cache = _catalog_and_cache()
    rows = [[e.name, f"{e.size / 1e6:.1f} MB", e.state, e.sha256[:16], e.origin, e.fetched_at]
            for e in cache.list()]
    print(f"cache: {cache.root}")
    print_table(["image", "size", "state", "sha256", "origin", "fetched"], rows)
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    _, cache = _catalog_and_cache()
    results = cache.verify(remove=args.remove)
    for result in results:
        print(f"{'ok ' if result.ok else 'BAD'} {result.name}  {result.problem}")
    bad = sum(not r.ok for r in results)
    print(f"{len(results)} images checked, {bad} bad")
    return 1 if bad else 0


def cmd_cache_prune(args: argparse.Namespace) -> int:
    catalog, cache = _catalog_and_cache()
    keep: set[str] = set()
    if not args.all:
        keep = {v.image for b in catalog.benchmarks() for v in catalog.versions(b)}
        keep |= {cache.local_build_path(v).name for b in catalog.benchmarks()
                 for v in catalog.versions(b)}
    removed = cache.prune(keep=keep)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} files removed")
    return 0


def cmd_build(args: argparse.Namespace) -> int:

    if args.verify:
        if args.recipe or args.output:
            raise BadConfig("--verify rebuilds the catalog version's own recipe; drop RECIPE/-o")
        return _verify(args)
    if args.against:
        raise BadConfig("--against goes with --verify BENCHMARK@EXPERIMENT")
    if args.recipe is None or args.output is None:
        raise BadConfig("build needs RECIPE and -o OUT.sif (or --verify BENCHMARK@EXPERIMENT)")

    build_args = {}
    for item in args.build_arg:
        name, sep, value = item.partition("=")
        if not sep:
            raise BadConfig(f"--build-arg {item!r}: expected NAME=VALUE")
        build_args[name] = value
    result = build_image(args.recipe, args.output, build_args=build_args,
                         progress=lambda message: print(message, file=sys.stderr, flush=True),
                         workdir=args.workdir, context=args.context, builder=args.builder,
                         run_test=not args.notest)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases.items())
    print(f"built {result.path} ({result.size / 1e6:.1f} MB, sha256 {result.sha256}) with "
          f"{result.builder} in {result.seconds:.0f} s: {phases}")
    return 0


def _verify(args: argparse.Namespace) -> int:

    benchmark, _, experiment = args.verify.partition("@")
    build = default_build(args.workdir, lambda message: print(message, file=sys.stderr,
                                                                flush=True))
    result = verify_version(benchmark, experiment or None, build=build, workdir=args.workdir,
                            against=args.against)
    print("\n".join(report_lines(result)))
    return 0 if result.reproduced else 1


def cmd_publish(args: argparse.Namespace) -> int:

    pushed = publish(args.image, args.reference, experiment=args.experiment,
                     catalog=args.catalog, insecure=args.insecure, progress=sys.stderr.isatty())
    how = "pushed" if pushed.uploaded else "already in the registry; tagged"
    print(f"{args.image.name}: {how} {pushed.reference} ({pushed.size / 1e6:.1f} MB, sha256 "
          f"{pushed.sha256}, manifest {pushed.manifest_digest})")
    if args.catalog:
        print(f"recorded {args.experiment} in {args.catalog}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:


    image = SifImage.open(args.image)
    labels = image.labels()
    print(f"image      {args.image}")
    print(f"size       {args.image.stat().st_size / 1e6:.1f} MB")
    print(f"sha256     {sha256_file(args.image)}")
    created = datetime.datetime.fromtimestamp(image.created, datetime.timezone.utc)
    print(f"arch       {image.arch}   created {created:%Y-%m-%d %H:%M:%S} UTC")
    print(f"benchmarks {labels.get('org.dacbench-remote.benchmarks', '(not labelled)')}")
    _print_manifest(image, packages=args.packages)
    for key in sorted(labels):
        print(f"label      {key} = {labels[key]}")
    for descriptor in image.descriptors:
        print(f"object     {descriptor.id:>2} {descriptor.kind:<14} {descriptor.size / 1e6:10.2f} MB "
              f"{descriptor.name}")
    if args.deffile:
        print("\n" + (image.deffile() or "(no definition file stored)"))
    return 0


def _print_manifest(image, *, packages: bool) -> None:


    manifest = image.json_object(MANIFEST_NAME)
    if manifest is None:
        print("manifest   (none: not built by dacbench-remote's builder)")
        return
    versions = package_versions(manifest, "dacbench", "numpy", "gymnasium")
    print("versions   " + "  ".join(f"{name} {versions.get(name, '-')}"
                                   for name in ("dacbench", "numpy", "gymnasium")))
    epoch = manifest.get("source_date_epoch", 0)
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    lists = manifest.get("packages", {})
    print(f"built by   {manifest.get('builder')} from {manifest.get('recipe')} (sha256 "
          f"{manifest.get('recipe_sha256', '')[:16]}), epoch {epoch} ({when:%Y-%m-%d %H:%M} UTC)")
    print(f"inputs     {manifest.get('inputs_sha256')}")
    print(f"packages   {len(lists.get('debian', []))} Debian, {len(lists.get('python', []))} Python")
    if packages:
        for kind in ("debian", "python"):
            for package in lists.get(kind, []):
                print(f"package    {kind:<6} {package['name']} {package.get('version', '')}")


def cmd_ps(args: argparse.Namespace) -> int:


    servers = list_servers()
    rows = [[s.pid, s.runtime, s.socket_id or "-", f"{time.time() - s.started:.0f}s",
             "yes" if s.socket_alive else "no", "ORPHANED" if s.orphaned else "", s.socket or "-"]
            for s in servers]
    print_table(["pid", "runtime", "id", "age", "answers", "", "socket"], rows)
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:

    report = cleanup_stale()
    print("\n".join(report.lines()))
    return 1 if report.problems else 0


def cmd_sweep_run(args: argparse.Namespace) -> int:

    result = run_sweep(args.spec, executor=args.executor, workers=args.workers,
                       resume=not args.no_resume, retry_failed=args.retry_failed,
                       sweep_dir=args.dir, progress=lambda message: print(message, file=sys.stderr))
    print(result)
    return 0 if result.ok else 1


def cmd_sweep_cancel(args: argparse.Namespace) -> int:

    print(cancel(args.sweep_dir))
    return 0


def cmd_sweep_status(args: argparse.Namespace) -> int:

    print(status(args.sweep_dir))
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:

    print(report(args.sweep_dir, plot=not args.no_plot))
    return 0


def cmd_config(args: argparse.Namespace) -> int:

    print(load_config().describe())
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
