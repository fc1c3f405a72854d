"""The `dacbench-remote` commands that run, build or inspect images and servers: the handlers
cli/__init__.py imports when one of them runs (they need the runner, gymnasium and the image
tools; `--help`, `config` and the sweep commands do not)."""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from .._sys.files import sha256_file
from ..config import load_config
from ..errors import BadConfig, CorruptImage, ImageNotFound, RecipeError
from ..experiments import cancel as cancel_experiment
from ..experiments import report as report_experiment
from ..experiments import run_experiment
from ..experiments import status as experiment_status
from ..host.baseline_suite import (
    Selection,
    load_catalog,
    plan,
    run_suite,
)
from ..host.repeat import repeat_run
from ..host.runner import RemoteRunner
from ..host.servers import cleanup_stale, list_servers
from ..host.training import evaluate_agent, train_agent
from ..images.build import build_image
from ..images.cache import BUILT_LOCALLY, ImageCache
from ..images.catalog import Catalog, ImageVersion, benchmark_key
from ..images.manifest import MANIFEST_NAME, package_versions
from ..images.publish import publish
from ..images.recipe import parse_recipe, template_variables
from ..images.sif import SifImage
from ..images.verify import default_build, report_lines, verify_version
from ..images.wheelhouse import PipSources


def _print_progress(message: str) -> None:
    print(f"dacbench-remote: {message}", file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    run = train_agent(
        args.benchmark, args.agent, timesteps=args.timesteps, results_dir=args.out,
        seed=args.seed, num_envs=args.num_envs,
        hyperparameters=load_config_argument(args.hyperparameters, "--hyperparameters"),
        eval_episodes=args.eval_episodes, eval_seed=args.eval_seed, experiment=args.experiment,
        agent_experiment=args.agent_experiment, config=load_config_argument(args.config),
        env_image=args.image, agent_image=args.agent_image, runtime=args.runtime,
        build=args.build, torch_threads=args.torch_threads,
        startup_timeout=args.startup_timeout, progress=_print_progress)
    _print_episodes(run.episodes)
    provenance = run.provenance
    print(f"{provenance['algorithm']} trained for {provenance['timesteps']} timesteps on "
          f"{provenance['benchmark']} (seed {provenance['seed']}): {run.model_path}\n"
          f"parameters sha256 {provenance['parameters_sha256']}; provenance in "
          f"{run.run_dir / 'provenance.json'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = evaluate_agent(args.run_dir, episodes=args.episodes, seed=args.seed,
                         env_image=args.image, agent_image=args.agent_image,
                         runtime=args.runtime, build=args.build,
                         torch_threads=args.torch_threads,
                         startup_timeout=args.startup_timeout, progress=_print_progress)
    _print_episodes(run.episodes)
    print(f"evaluated {run.model_path}; appended to {run.run_dir / 'evaluations.jsonl'}")
    return 0


def _print_episodes(episodes: list[dict]) -> None:
    if not episodes:
        return
    print_table(["episode", "seed", "return", "length"],
                [[e["episode"], e["seed"], f"{e['return']:.6g}", e["length"]] for e in episodes])
    returns = [e["return"] for e in episodes]
    spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
    print(f"\nmean return {statistics.fmean(returns):.6g} ± {spread:.4g} over {len(returns)} "
          "episodes")


def cmd_experiment_run(args: argparse.Namespace) -> int:

    result = run_experiment(args.spec, executor=args.executor, force=args.force,
                            directory=args.dir,
                            progress=lambda message: print(message, file=sys.stderr))
    print(result)
    if result.failed:
        print(f"dacbench-remote: error: step(s) failed: {', '.join(result.failed)}",
              file=sys.stderr)
    return 0 if result.ok else 1


def cmd_experiment_status(args: argparse.Namespace) -> int:

    print(experiment_status(args.spec))
    return 0


def cmd_experiment_report(args: argparse.Namespace) -> int:

    result = report_experiment(args.spec)
    print(result)
    return 1 if result.missing else 0


def cmd_experiment_cancel(args: argparse.Namespace) -> int:

    print(cancel_experiment(args.spec))
    return 0


def load_config_argument(text: str | None, option: str = "--config"):
    """`--config` (or `option`) takes JSON text or the path of a JSON file."""
    if text is None:
        return None
    path = Path(text)
    if not text.lstrip().startswith(("{", "[")) and path.exists():
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadConfig(f"{option} is neither a JSON object nor a JSON file: {exc}") from exc


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
    return Catalog.load(config.catalog_dirs), ImageCache(config.cache_dir,
                                                         pip_sources=PipSources.of(config))


STACK_LABELS = ("dacbench-version", "numpy-version", "gymnasium-version")
AGENT_LABELS = ("stable-baselines3-version", "torch-version", "gymnasium-version")


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
    agent_rows = []
    for family in catalog.families.values():
        if family.kind != "agent":
            continue
        for version in catalog.agent_versions(family.agents[0]):
            if version.family != family.name:
                continue  # a later family serving the same agent lists it
            cached = cache.cached_path(version)
            labels = _version_labels(version, cached)
            stack = [labels.get(f"org.dacbench-remote.{name}", "-") for name in AGENT_LABELS]
            agent_rows.append([",".join(family.agents), version.experiment,
                               "yes" if version.default else "", family.name, *stack,
                               image_origin(version), _cached_entry(cache, cached)])
    if agent_rows:
        print("\nagent images (dacbench-remote train --agent NAME --agent-experiment EXPERIMENT):")
        print_table(["agents", "experiment", "default", "family", "stable-baselines3", "torch",
                     "gymnasium", "image", "cached"], agent_rows)
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
    agents = {benchmark_key(agent) for agent in catalog.agents()}
    if benchmark_key(benchmark) in agents and benchmark_key(benchmark) not in {
            benchmark_key(name) for name in catalog.benchmarks()}:
        resolved = catalog.resolve_agent(benchmark, experiment or None)  # an agent image
    else:
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
    sources = _pip_sources(args)
    result = build_image(args.recipe, args.output, build_args=build_args,
                         progress=lambda message: print(message, file=sys.stderr, flush=True),
                         workdir=args.workdir, context=args.context, builder=args.builder,
                         run_test=not args.notest, wheelhouse=sources.wheelhouse,
                         offline=sources.offline)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases.items())
    print(f"built {result.path} ({result.size / 1e6:.1f} MB, sha256 {result.sha256}) with "
          f"{result.builder} in {result.seconds:.0f} s: {phases}")
    return 0


def _pip_sources(args: argparse.Namespace) -> PipSources:
    """--wheelhouse directories, then the config's; --offline/--no-offline, else the config's."""
    config = PipSources.of(load_config())
    offline = config.offline if args.offline is None else args.offline
    return PipSources(tuple(args.wheelhouse), offline).plus(config.wheelhouse)


def _verify(args: argparse.Namespace) -> int:

    benchmark, _, experiment = args.verify.partition("@")
    build = default_build(args.workdir, lambda message: print(message, file=sys.stderr,
                                                                flush=True))
    result = verify_version(benchmark, experiment or None, build=build, workdir=args.workdir,
                            against=args.against, sources=_pip_sources(args))
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
    for wheel in manifest.get("wheelhouse", []):
        print(f"wheel      {wheel.get('file')} (sha256 {wheel.get('sha256')}), from a wheelhouse")
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


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


