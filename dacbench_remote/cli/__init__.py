"""The `dacbench-remote` command: thin wrappers that call the library and print results."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..config import RUNTIME_NAMES, load_config
from ..errors import DacbenchRemoteError
from ..sweeps.executors import EXECUTORS
from ..sweeps.reporting import report, status
from ..wire.baselines import DEFAULT_EPISODES, DEFAULT_SEEDS

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


def _command(name: str, module: str = "commands") -> Callable[[argparse.Namespace], int]:
    """The handler `name` of cli/MODULE.py, imported when it runs: `--help`, `config`, `status`
    and `report` start without the runner, gymnasium and the image tools (about 0.4 s), and
    `sweep run` starts its containers before the trials' modules are imported."""
    def handler(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(f".{module}", __name__), name)(args)

    handler.__name__ = name
    handler.target = (f"{__name__}.{module}", name)  # tests/test_cli.py imports each
    return handler


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
    for add_command in (_add_run, _add_baselines, _add_train_and_evaluate, _add_list, _add_pull,
                        _add_cache, _add_build, _add_publish, _add_inspect, _add_ps_and_cleanup,
                        _add_sweep, _add_experiment, _add_config):
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
    run.set_defaults(handler=_command("cmd_run"))


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
    baselines.set_defaults(handler=_command("cmd_baselines"))


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


EPILOG_TRAIN = """examples:
  dacbench-remote train Luby --agent PPO --timesteps 20000 --eval-episodes 10
  dacbench-remote train Luby --agent PPO --timesteps 2048 --seed 3 --num-envs 4 \\
      --hyperparameters '{"n_steps": 128, "batch_size": 64}' --out results/
  dacbench-remote evaluate results/train-PPO-Luby-s3-1a2b3c4d --episodes 10

The agent (Stable-Baselines3 on a CPU torch) runs in the agent image's container, the benchmark
in its own image's container; the two share one private socket directory and nothing else, and
the host only starts them, relays progress (stderr) and saves the result. Images come from the
catalog (`dacbench-remote list` shows the agent images) and are built when neither cached nor
downloadable; the agent image's build needs torch's CPU wheel in a wheelhouse (config
`wheelhouse`, see docs/recipes.md).

The run directory holds model.zip and provenance.json: both images' sha256s and experiment
ids, seeds, hyperparameters (given and effective), the SB3/torch/gymnasium versions, the
model's sha256 and a digest of its parameters, the evaluation episodes. `evaluate` loads the
model again in the agent image; with the same --seed it gives the same returns.
"""


def _add_train_and_evaluate(commands) -> None:
    """`train` and `evaluate`: an RL agent in its own image against a benchmark in another."""
    train = commands.add_parser(
        "train", help="train an RL agent (Stable-Baselines3) in its own image against a benchmark",
        description="Train ALGORITHM (--agent) in the agent image for --timesteps steps on "
        "--num-envs copies of BENCHMARK served from the benchmark's image, then (with "
        "--eval-episodes) evaluate its deterministic policy. Saves model.zip and "
        "provenance.json to a new run directory under --out and prints its path.",
        epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("benchmark", help="DACBench name (Luby, ...), gymnasium:ID, or module:attr")
    train.add_argument("--agent", default="PPO",
                       help="the Stable-Baselines3 algorithm: PPO, A2C, DQN, SAC, TD3, DDPG "
                       "(default PPO; DQN needs discrete actions, SAC/TD3/DDPG continuous)")
    train.add_argument("--timesteps", type=int, required=True, help="environment steps to train")
    train.add_argument("--seed", type=int, default=0,
                       help="seeds SB3 (random, numpy, torch) and the envs: env i resets with "
                       "SEED + i (default 0); the same seed gives the same weights")
    train.add_argument("--num-envs", type=int, default=1, help="envs stepped together (default 1)")
    train.add_argument("--hyperparameters", metavar="JSON",
                       help="the algorithm's keyword arguments: JSON text or a JSON file, e.g. "
                       "'{\"n_steps\": 64, \"learning_rate\": 0.001}'; \"policy\" picks the "
                       "policy (default: MlpPolicy)")
    train.add_argument("--eval-episodes", type=int, default=0,
                       help="episodes of the trained policy afterwards (default 0)")
    train.add_argument("--eval-seed", type=int,
                       help="evaluation episode i resets with EVAL_SEED + i (default: --seed)")
    train.add_argument("--experiment", help="the benchmark image's experiment id (default: the "
                       "catalog's default), e.g. exp:0.01")
    train.add_argument("--agent-experiment",
                       help="the agent image's experiment id (default: the catalog's default)")
    train.add_argument("--config", help="DACBench config: JSON text or a path to a JSON file")
    _add_pair_options(train)
    train.add_argument("--out", type=Path, default=Path("results"),
                       help="where the run directory is made (default ./results)")
    train.set_defaults(handler=_command("cmd_train"))

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a model `train` saved, in the agent image, against its benchmark",
        description="Load RUN_DIR/model.zip in the agent image and run --episodes episodes of "
        "its deterministic policy against the benchmark it was trained on (as its "
        "provenance.json records: benchmark, config, both images' experiments), served from "
        "the benchmark's image. Prints the returns and appends them to RUN_DIR/evaluations.jsonl.",
        epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("run_dir", type=Path, help="a run directory written by `train`")
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    evaluate.add_argument("--seed", type=int,
                          help="episode i resets with SEED + i (default: the run's eval seed, "
                          "so the returns repeat those recorded by train)")
    _add_pair_options(evaluate)
    evaluate.set_defaults(handler=_command("cmd_evaluate"))


def _add_pair_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, help="the benchmark's .sif instead of the catalog's")
    parser.add_argument("--agent-image", type=Path, help="the agent's .sif instead of the catalog's")
    parser.add_argument("--runtime", choices=[n for n in RUNTIME_NAMES if n != "local"],
                        help="the container runtime of both sides (default: the config's "
                        "default_runtime, auto unless set)")
    parser.add_argument("--build", action=argparse.BooleanOptionalAction, default=True,
                        help="build an image from its recipe when it is neither cached nor "
                        "downloadable (default: build)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch's CPU threads in the agent; one keeps runs repeatable and cheap "
                        "(default 1)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds (default 60)")


def _add_list(commands) -> None:
    """`list`: the catalog's benchmarks and experiment versions."""
    listing = commands.add_parser(
        "list", help="benchmarks and agents in the catalog, their experiment versions and what "
        "is cached",
        description="List every benchmark of the catalog (packaged plus your catalog_dirs) with "
        "its experiment identifiers, the default one, where its image comes from (the source "
        "it downloads from; else build,pinned: built from its recipe and checked against the "
        "pinned sha256; build,unpinned: built locally, no pin) and whether it is in the cache "
        "(and built here). Then the agent images (families of kind \"agent\": RL algorithms "
        "that `train` runs in their own image) with their Stable-Baselines3, torch and "
        "gymnasium versions.")
    listing.set_defaults(handler=_command("cmd_list"))


def _add_pull(commands) -> None:
    """`pull`: fetch (or build) a benchmark's image into the cache."""
    pull = commands.add_parser(
        "pull", help="fetch a benchmark's (or agent's) image into the cache (download and verify, "
        "or build)",
        description="Download BENCHMARK's image for EXPERIMENT (default: the catalog's default "
        "version), verify its sha256 and keep it in the cache. With --build, build it from its "
        "recipe when no verified download exists. An agent's name (PPO, ...) fetches its "
        "agent image (whose build needs a wheelhouse: docs/recipes.md).")
    pull.add_argument("target", metavar="BENCHMARK[@EXPERIMENT]",
                      help="e.g. Luby@exp:0.01, or an agent: PPO@exp:0.01")
    pull.add_argument("--build", action="store_true", help="build from the recipe if needed")
    pull.set_defaults(handler=_command("cmd_pull"))


def _add_cache(commands) -> None:
    """`cache ls|verify|prune`: the image cache."""
    cache = commands.add_parser("cache", help="inspect, verify or prune the image cache",
                                description="Manage the image cache (location: `dacbench-remote "
                                "config`).")
    cache_commands = cache.add_subparsers(title="actions", metavar="ACTION")
    cache_ls = cache_commands.add_parser("ls", help="list cached images and partial downloads")
    cache_ls.set_defaults(handler=_command("cmd_cache_ls"))
    cache_verify = cache_commands.add_parser("verify", help="re-hash every cached image")
    cache_verify.add_argument("--remove", action="store_true", help="delete images that fail")
    cache_verify.set_defaults(handler=_command("cmd_cache_verify"))
    cache_prune = cache_commands.add_parser(
        "prune", help="remove partial downloads and images no longer in the catalog")
    cache_prune.add_argument("--all", action="store_true", help="empty the cache completely")
    cache_prune.set_defaults(handler=_command("cmd_cache_prune"))


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
        "  dacbench-remote build --verify Luby@exp:0.01     # does the pin still reproduce?\n"
        "  pip download --no-deps torch==2.13.0+cpu -d wheels/   # a wheelhouse, then:\n"
        "  dacbench-remote build recipes/agent-sb3.def -o agent-sb3.sif --wheelhouse wheels/\n"
        "  dacbench-remote build RECIPE -o OUT.sif --wheelhouse wheels/ --offline   # no index\n\n"
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
    build.add_argument("--wheelhouse", action="append", type=Path, default=[], metavar="DIR",
                       help="a directory of wheels that pip in %%post installs from before the "
                       "package index (repeatable; copied into the build; the wheels that end "
                       "up in the image are recorded in its manifest by sha256). Also from the "
                       "config's `wheelhouse`, after these. Make one with `pip download "
                       "--no-deps PACKAGE==VERSION -d DIR`")
    build.add_argument("--offline", action=argparse.BooleanOptionalAction, default=None,
                       help="no package index at all (pip --no-index): everything pip installs "
                       "must be in the wheelhouse, or the build fails naming what is missing "
                       "(default: the config's `offline`, else off)")
    build.set_defaults(handler=_command("cmd_build"))


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
    publish.set_defaults(handler=_command("cmd_publish"))


def _add_inspect(commands) -> None:
    """`inspect`: what a .sif holds."""
    inspect = commands.add_parser(
        "inspect", help="show what a .sif image holds: benchmarks, versions, labels, size, sha256",
        description="Read a SIF image (pure Python, no Apptainer needed) and print its benchmarks "
        "and versions (from its labels), the build manifest of images our builder made (recipe "
        "and inputs digests, build epoch, DACBench/numpy/gymnasium versions, the wheelhouse's "
        "wheels it holds), all labels, "
        "objects, size and sha256.")
    inspect.add_argument("image", type=Path, help="path of a .sif file")
    inspect.add_argument("--deffile", action="store_true", help="also print the recipe it was built from")
    inspect.add_argument("--packages", action="store_true",
                         help="also list every Debian and Python package of the build manifest")
    inspect.set_defaults(handler=_command("cmd_inspect"))


def _add_ps_and_cleanup(commands) -> None:
    """`ps` and `cleanup`: this user's servers and what crashed hosts left."""
    ps = commands.add_parser("ps", help="list servers started by this user",
                             description="List running dacbench-remote servers of this user: pid, "
                             "runtime, id (attach with socket_id=ID), age, whether the socket "
                             "answers, whether the host process that started them is gone "
                             "(orphaned), and the socket.")
    ps.set_defaults(handler=_command("cmd_ps"))
    cleanup = commands.add_parser(
        "cleanup", help="stop orphaned servers, remove dead sockets and stale mounts",
        description="Stop servers whose host process is gone, remove sockets nobody listens on, "
        "unmount stale squashfuse mounts and unfinished extractions of this user.")
    cleanup.set_defaults(handler=_command("cmd_cleanup"))


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
    sweep_run.set_defaults(handler=_command("cmd_sweep_run", "sweep_commands"))
    _add_sweep_status(sweep_commands, SWEEP_STATUS_HELP)
    _add_sweep_report(sweep_commands, SWEEP_REPORT_HELP)
    sweep_cancel = sweep_commands.add_parser(
        "cancel", help="cancel its Slurm jobs and stop every container the sweep started")
    sweep_cancel.add_argument("sweep_dir", type=Path, help=SWEEP_DIR_HELP)
    sweep_cancel.set_defaults(handler=_command("cmd_sweep_cancel", "sweep_commands"))
    # The first spelling, kept: `status` and `report` at the top are `sweep status|report`.
    _add_sweep_status(commands, f"alias of `sweep status`: {SWEEP_STATUS_HELP}")
    _add_sweep_report(commands, f"alias of `sweep report`: {SWEEP_REPORT_HELP}")


EXPERIMENT_HELP = "the experiment's spec (TOML), or the directory it runs in"


def _add_experiment(commands) -> None:
    """`experiment run|status|report|cancel SPEC`."""
    experiment = commands.add_parser(
        "experiment", help="run a DAG of steps (tune, evaluate, report, ...) from one spec, "
        "cached and resumable, locally or on Slurm",
        description="Experiments: steps that need each other's outputs (docs/experiments.md).")
    actions = experiment.add_subparsers(title="actions", metavar="ACTION")
    run = actions.add_parser("run", help="run (or resume) every step that is not cached")
    run.add_argument("spec", type=Path, help="path of the experiment's TOML spec")
    run.add_argument("--executor", choices=EXECUTORS, help="override every step's executor")
    run.add_argument("--force", action="append", default=[], metavar="STEP",
                     help="run STEP and everything downstream again (repeatable)")
    run.add_argument("--dir", type=Path, help="experiment directory (default: from the spec)")
    run.set_defaults(handler=_command("cmd_experiment_run"))
    for name, handler, help_text in (
            ("status", _command("cmd_experiment_status"), "the DAG with each step's state and progress, "
             "and the tune steps' best so far"),
            ("report", _command("cmd_experiment_report"), "write the report steps again from the "
             "recorded outputs (nothing runs)"),
            ("cancel", _command("cmd_experiment_cancel"), "stop the driver, its Slurm jobs and every "
             "container it started")):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("spec", type=Path, help=EXPERIMENT_HELP)
        action.set_defaults(handler=handler)


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


def _seed_argument(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'none'") from None


def cmd_sweep_status(args: argparse.Namespace) -> int:

    print(status(args.sweep_dir))
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:

    print(report(args.sweep_dir, plot=not args.no_plot))
    return 0


def cmd_config(args: argparse.Namespace) -> int:

    print(load_config().describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
