#!/usr/bin/env python
"""Sweep throughput: trials per minute for 1, 2 and 4 local workers, and the per-trial overhead.

    python scripts/bench_sweep.py                       # local runtime and, if possible, bwrap
    python scripts/bench_sweep.py --trials 16 --image /path/to/image.sif

A trial here is one short episode of gymnasium:CartPole-v1 with a random agent, so the numbers
are dominated by what a sweep adds per trial: a worker process, a server (plain or in a bwrap
container), the connection, and cleanup. Printed as a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dacbench_remote.host.runner import RemoteRunner  # noqa: E402
from dacbench_remote.sweeps import SweepDir, read_results_csv, run_sweep  # noqa: E402


def write_spec(directory: Path, trials: int, episodes: int, runtime: str,
               image: Path | None) -> Path:
    image_line = f'image = "{image}"\n' if image else ""
    spec = directory / "sweep.toml"
    spec.write_text(
        f'name = "bench"\nepisodes = {episodes}\ntime_limit = 300\n'
        f'[runtime]\nkind = "{runtime}"\n{image_line}'
        f'[grid]\nbenchmarks = ["gymnasium:CartPole-v1"]\nagents = ["random"]\n'
        f"seeds = {{ start = 0, count = {trials} }}\n"
    )
    return spec


def sweep_once(trials: int, episodes: int, workers: int, runtime: str,
               image: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        spec = write_spec(Path(tmp), trials, episodes, runtime, image)
        started = time.perf_counter()
        result = run_sweep(spec, workers=workers, sweep_dir=Path(tmp) / "out")
        wall = time.perf_counter() - started
        if not result.ok:
            errors = {o.error for o in result.outcomes if o.status != "done"}
            raise SystemExit(f"{runtime}: trials failed: {errors}")
        layout = SweepDir(Path(tmp) / "out")
        rows = read_results_csv(layout.results_csv)
        episode_time: dict[str, float] = {}
        for row in rows:
            trial_id = row["trial_id"]
            episode_time[trial_id] = episode_time.get(trial_id, 0.0) + row["wall_time"]
        overheads = [o.wall_time - episode_time[o.trial_id] for o in result.outcomes]
    return {"wall": wall, "per_minute": trials / wall * 60,
            "overhead": statistics.median(overheads)}


def runner_startup(runtime: str, image: Path | None, repeats: int) -> float:
    """Median seconds from RemoteRunner.start() to a connected server (no worker process)."""
    times = []
    for _ in range(repeats):
        with RemoteRunner("gymnasium:CartPole-v1", runtime=runtime, image=image) as runner:
            times.append(runner.startup_seconds)
    return statistics.median(times)


def default_image() -> Path | None:
    """The test suite's base image if it was built (newest), else its small test image."""
    from dacbench_remote.runtimes.bwrap import bwrap_problem

    if bwrap_problem():
        return None
    # The base image of the current experiment version (dacbench-base-KEY.sif), not an older
    # version's (dacbench-base-0.3.0-KEY.sif: another DACBench, other import times).
    built = sorted((p for p in Path("/var/tmp/dacbench-remote-tests/images").glob(
                        "dacbench-base-*.sif") if re.fullmatch(r"dacbench-base-[0-9a-f]+", p.stem)),
                   key=lambda p: p.stat().st_mtime)
    if built:
        return built[-1]
    try:
        from tests.integration.runtime_images import build_standin_image

        return build_standin_image()
    except BaseException as exc:  # pytest.skip raises a BaseException subclass
        print(f"no bwrap image ({type(exc).__name__}: {exc}); pass --image", file=sys.stderr)
        return None


LUBY_LOOP = """
import sys
from dacbench.benchmarks import LubyBenchmark
from dacbench_remote.host.agents import make_agent
from dacbench_remote.host.runner import run_episode
for seed in range(int(sys.argv[1])):
    env = LubyBenchmark().get_environment()
    run_episode(env, make_agent("random", env, seed), 0, seed)
    env.close()
"""
LUBY_SWEEP = "import sys; from dacbench_remote.sweeps import run_sweep; run_sweep(sys.argv[1], workers=1)"


def luby_spec(directory: Path, count: int, runtime: str, tables: str = "",
              name: str = "luby") -> Path:
    """directory/sweep.toml (the directory made here): `count` one-episode Luby trials with the
    random agent, seeds 0, 1, ...; `runtime`: the [runtime] table's lines, `tables`: more."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sweep.toml"
    path.write_text(
        f'name = "{name}"\nepisodes = 1\ntime_limit = 300\n[runtime]\n{runtime}\n{tables}'
        f'[grid]\nbenchmarks = ["Luby"]\nagents = ["random"]\n'
        f"seeds = {{ start = 0, count = {count} }}\n")
    return path


def bwrap_lines(image: Path) -> str:
    """The [runtime] lines of a bwrap sweep from `image`."""
    return f'kind = "bwrap"\nimage = "{image}"'


def timed(argv: list[str]) -> float:
    """Wall time of a fresh interpreter running argv, from its start to its exit."""
    import subprocess

    started = time.perf_counter()
    before = busy_cpu_seconds()
    subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    timed.busy = busy_cpu_seconds() - before  # the machine's, for what the run kept busy
    return time.perf_counter() - started


def busy_cpu_seconds() -> float:
    """CPU seconds all cores of this machine spent busy since boot (/proc/stat; on a quiet
    machine, what a timed run and every process it started used, containers included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def luby_warm(trials: int, fresh_trials: int, image: Path, rounds: int = 3) -> None:
    """The warm-trials table: container sweeps (warm, fresh) against a plain in-process loop,
    the loop and the warm sweep alternated for `rounds` rounds (this machine's speed drifts
    within minutes: each round's ratio is of runs seconds apart)."""
    def spec(directory: Path, count: int, warm: bool) -> Path:
        return luby_spec(directory, count, bwrap_lines(image),
                         f"[executor.local]\nwarm = {str(warm).lower()}\n")

    runs = []  # per round: loop s, loop busy s, warm s, warm busy s, warm phases
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        for round_ in range(rounds):
            loop = timed([sys.executable, "-c", LUBY_LOOP, str(trials)])
            loop_busy = timed.busy
            directory = Path(tmp) / f"w{round_}"
            warm = timed([sys.executable, "-c", LUBY_SWEEP, str(spec(directory, trials, True))])
            phases = warm_phases(directory / "luby")  # the spec's name is its directory
            phases["outside the run (interpreter, imports, tables, stopping)"] = (
                warm - phases.pop("run start to the last trial's end"))
            runs.append((loop, loop_busy, warm, timed.busy, phases))
        fresh = timed([sys.executable, "-c", LUBY_SWEEP,
                       str(spec(Path(tmp) / "f", fresh_trials, False))]) * trials / fresh_trials
    print(f"{trials} one-episode Luby trials, one worker, bwrap image {image.name}; "
          f"{rounds} rounds, loop and warm sweep alternated")
    columns = "".join(f"{f'round {i + 1}':>16}" for i in range(rounds))
    print(f"{'':60}{columns}")

    def row(name: str, cells) -> None:
        print(f"{name:60}" + "".join(f"{cell:>16}" for cell in cells))

    row("in-process loop, s", (f"{r[0]:.2f}" for r in runs))
    row("container sweep, warm, s (x loop)", (f"{r[2]:.2f} ({r[2] / r[0]:.2f}x)" for r in runs))
    row("CPU busy, all processes: loop / warm sweep, s", (f"{r[1]:.2f} / {r[3]:.2f}" for r in runs))
    for name in runs[0][4]:
        row(f"{name}, ms", (f"{r[4][name] * 1000:.0f}" for r in runs))
    ratios = sorted(r[2] / r[0] for r in runs)
    median = statistics.median(ratios)
    met = sum(ratio <= 1.5 for ratio in ratios)
    loop = statistics.median(r[0] for r in runs)
    print(f"container sweep, fresh (from {fresh_trials} trials): {fresh:.1f} s, "
          f"{fresh / loop:.0f}x the median loop")
    print(f"target (warm sweep <= 1.5x the loop): {'met' if median <= 1.5 else 'NOT met'} "
          f"(median {median:.2f}x, {ratios[0]:.2f}-{ratios[-1]:.2f}x; met in {met} of {rounds} "
          f"rounds)")


def warm_phases(directory: Path) -> dict[str, float]:
    """The warm sweep's time split up: before the first trial, and per trial (medians) the
    worker's life, the episodes in it, and the gap the driver leaves until the next trial."""
    from dacbench_remote.sweeps.sweepdir import read_jsonl

    layout = SweepDir(directory)
    outcomes = sorted(layout.outcomes().values(), key=lambda o: o.started)
    start = next(r["time"] for r in read_jsonl(layout.runs) if r["event"] == "start")
    episodes = {o.trial_id: sum(r["wall_time"] for r in layout.episode_rows(o.trial_id))
                for o in outcomes}
    gaps = [b.started - a.finished for a, b in itertools.pairwise(outcomes)]
    return {
        "run start to the last trial's end": outcomes[-1].finished - start,
        "run start to the first trial's start (zygote, worker host)": outcomes[0].started - start,
        "first trial's start to the last one's end": outcomes[-1].finished - outcomes[0].started,
        "per trial: worker fork to exit (median)": statistics.median(o.wall_time
                                                                     for o in outcomes),
        "per trial: of which the episode (median)": statistics.median(episodes.values()),
        "per trial: gap to the next trial (median)": statistics.median(gaps) if gaps else 0.0,
    }


def synthetic_sweep(directory: Path, count: int, running: int = 8) -> None:
    """A sweep directory as a finished run of `count` one-episode trials leaves it (all but
    `running` recorded in the journal, in groups of 256 as the local executor commits them)."""
    from dacbench_remote.sweeps.journal import JournalWriter
    from dacbench_remote.sweeps.trial import DONE, Trial, TrialOutcome

    layout = SweepDir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trials = [Trial(benchmark="gymnasium:CartPole-v1", agent="random", seed=seed, episodes=1)
              for seed in range(count)]
    layout.write_trials(trials)
    journal = JournalWriter(layout.journal_dir, "synthetic")
    now = time.time()
    for index, trial in enumerate(trials[:count - running]):
        outcome = TrialOutcome(trial.id, DONE, "synthetic", episodes=1, mean_return=20.0 + index % 7,
                               started=now, finished=now + 0.05, host="bench")
        journal.add(outcome, [{
            "sweep": "bench", "run_id": "synthetic", "trial_id": trial.id,
            "benchmark": trial.benchmark, "experiment": None, "config": "{}", "kwargs": "{}",
            "agent": trial.agent, "seed": trial.seed, "episode": 0, "episode_seed": trial.seed,
            "return": 20.0 + index % 7, "length": 20, "wall_time": 0.01, "terminated": True,
            "truncated": False, "runtime": "local", "image_sha256": None, "host": "bench"}])
        if journal.pending >= 256:
            journal.commit()
    journal.close()


def status_report(count: int) -> None:
    """Wall time of status() and report() on a synthetic sweep of `count` trials."""
    from dacbench_remote.sweeps import report, status

    def clock(call) -> tuple[float, float]:
        """Wall and CPU seconds of call() (CPU time says more on a machine others load)."""
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        return time.perf_counter() - wall, time.process_time() - cpu

    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        directory = Path(tmp) / "sweep"
        synthetic_sweep(directory, count)
        rows = [("status", [clock(lambda: status(directory)) for _ in range(5)]),
                ("report, tables and plot to write", [clock(lambda: report(directory))]),
                ("report, tables and plot current", [clock(lambda: report(directory))
                                                     for _ in range(5)])]
    print(f"status and report on a synthetic sweep of {count} finished one-episode trials "
          "(journal committed in groups of 256), each call reading the sweep afresh")
    print(f"{'call':34} {'wall s':>7} {'cpu s':>7} {'calls':>6}  (medians)")
    for name, times in rows:
        print(f"{name:34} {statistics.median(w for w, _ in times):>7.3f} "
              f"{statistics.median(c for _, c in times):>7.3f} {len(times):>6}")
    print("(a run writes the tables when it ends, so report after a run finds them current)")


def scaling(sizes: list[int], image: Path, plot: Path | None) -> None:
    """Warm container sweeps of growing size against the in-process loop of the same size: the
    per-trial overhead in ms must not grow with the sweep (optionally plotted to `plot`)."""
    def spec(directory: Path, count: int) -> Path:
        return luby_spec(directory, count, bwrap_lines(image))

    results = []
    print(f"scaling: one-episode Luby trials, one worker, bwrap image {image.name}")
    print(f"{'trials':>7} {'loop s':>8} {'sweep s':>8} {'x loop':>7} {'(sweep-loop)/trial ms':>22} "
          f"{'in-run/trial ms':>16}")
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            loop = timed([sys.executable, "-c", LUBY_LOOP, str(count)])
            sweep = timed([sys.executable, "-c", LUBY_SWEEP, str(spec(Path(tmp) / "s", count))])
            phases = warm_phases(Path(tmp) / "s" / "luby")
        in_run = phases["first trial's start to the last one's end"] / count
        row = (count, loop, sweep, (sweep - loop) / count * 1000, in_run * 1000)
        results.append(row)
        print(f"{count:>7} {loop:>8.2f} {sweep:>8.2f} {sweep / loop:>7.2f} {row[3]:>22.1f} "
              f"{row[4]:>16.1f}")
    print("(sweep-loop)/trial: what the sweep adds per trial, its start included; in-run/trial: "
          "first trial's start to the last one's end over the trials (episode included)")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(5, 3.2))
        counts = [r[0] for r in results]
        ax.plot(counts, [r[3] for r in results], marker="o", label="(sweep - loop) / trial")
        ax.plot(counts, [r[4] for r in results], marker="s", label="in the run, per trial")
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("trials in the sweep")
        ax.set_ylabel("ms per trial")
        ax.set_title(f"warm bwrap sweep of one-episode Luby trials, load {os.getloadavg()[0]:.1f}",
                     fontsize=8)
        ax.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(plot, dpi=110)
        print(f"plot: {plot}")


SLURM_SWEEP = ("import sys; from dacbench_remote.sweeps import run_sweep; "
               "r = run_sweep(sys.argv[1], executor='slurm'); sys.exit(0 if r.ok else 1)")


def fork_cost(children: int = 15) -> None:
    """Why a warm trial's server spends longer making its env than an in-process loop: the first
    env in a process forked after the imports (a zygote's child) against a second one there."""
    import warnings

    warnings.simplefilter("ignore")
    from dacbench.benchmarks import LubyBenchmark

    def make() -> float:
        started = time.perf_counter()
        LubyBenchmark().get_environment().reset(seed=0)
        return (time.perf_counter() - started) * 1000

    make()  # what a zygote's preload and first request leave imported and cached
    first, second, faults = [], [], []
    for _ in range(children):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            before = set(sys.modules)
            minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            made = make()
            minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - minflt
            os.write(write, f"{made} {make()} {minflt} {len(set(sys.modules) - before)}".encode())
            os._exit(0)
        os.close(write)
        a, b, flt, imported = os.read(read, 100).split()
        assert imported == b"0", f"the child imported {imported.decode()} modules"
        os.close(read)
        os.waitpid(pid, 0)
        first.append(float(a))
        second.append(float(b))
        faults.append(int(flt))
    here = statistics.median(make() for _ in range(children))

    def child_cpu(threads: int) -> float:
        """Median CPU ms of a forked child that starts `threads` threads (they exit at once)."""
        cpu = []
        for _ in range(children):
            pid = os.fork()
            if pid == 0:
                started = [threading.Thread(target=int) for _ in range(threads)]
                for thread in started:
                    thread.start()
                for thread in started:
                    thread.join()
                os._exit(0)
            _, _, usage = os.wait4(pid, 0)
            cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
        return statistics.median(cpu)

    forks, exits = [], []  # a child that exits at once: the fork and the exit alone
    for _ in range(children):
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forks.append((time.perf_counter() - started) * 1000)
        _, _, usage = os.wait4(pid, 0)
        exits.append((usage.ru_utime + usage.ru_stime) * 1000)
    with_threads = child_cpu(6)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"a process with DACBench imported ({rss:.0f} MB resident) forking a child that exits "
          f"at once: fork() {statistics.median(forks):.2f} ms in the parent, "
          f"{statistics.median(exits):.2f} ms CPU in the child; a child that starts 6 threads "
          f"first: {with_threads:.2f} ms CPU")
    print(f"Luby env made and reset, median of {children} forked children, in ms")
    print(f"  first env in a freshly forked process    {statistics.median(first):6.2f}"
          f"  ({statistics.median(faults)} page faults)")
    print(f"  second env in that process               {statistics.median(second):6.2f}")
    print(f"  in the parent (the in-process loop)      {here:6.2f}")
    print(f"  ratio first in a fork / in-process       {statistics.median(first) / here:6.2f}x")
    print("The difference is the fork's copy-on-write: the child's first touches of the parent's "
          "memory (object headers, module dicts) fault and copy pages; no child imported a module.")


def cpu_split(trials: int, image: Path) -> None:
    """CPU seconds per trial of each process of a warm sweep (driver, worker host and its
    workers, zygote and its servers), read from /proc just before the driver stops them: on 2
    cores a sweep whose processes need more than 2 x its wall time is CPU-bound."""
    from dacbench_remote._sys.procfs import descendants
    from dacbench_remote.sweeps import warm

    tick = os.sysconf("SC_CLK_TCK")

    def cpu(pid: int) -> tuple[float, float]:
        """(own, reaped children's) CPU seconds of a running process."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own, children = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        return own / tick, children / tick

    seen: dict[str, tuple[float, float]] = {}
    close = warm.WarmSlots.close

    def measured_close(self) -> None:
        for started in self._all:
            if isinstance(started, warm.WorkerHost):
                seen["worker host"] = cpu(started.process.pid)
                continue
            for pid in [started.server.pid, *descendants(started.server.pid)]:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"--zygote" in argv and b"dacbench_remote.server" in argv:  # its python,
                    seen.setdefault("zygote", cpu(pid))  # not bwrap's; first: not a child's
        close(self)

    warm.WarmSlots.close = measured_close
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        spec = luby_spec(Path(tmp), trials, bwrap_lines(image), name="cpu")
        started, own = time.perf_counter(), os.times()
        run_sweep(spec, workers=1)
        wall, after = time.perf_counter() - started, os.times()
    warm.WarmSlots.close = close
    driver = after.user - own.user + after.system - own.system
    rows = [("driver (supervisor threads, journal, tables)", driver, None),
            ("worker host (its start and imports, then a fork per trial)", *seen["worker host"]),
            ("zygote (DACBench's import, then a fork per trial)", *seen["zygote"])]
    print(f"{trials} one-episode Luby trials, one worker, bwrap image {image.name}: "
          f"{wall:.2f} s wall")
    print(f"{'process':60} {'own s':>7} {'children s':>11} {'children ms/trial':>18}")
    total = 0.0
    for name, own_s, children_s in rows:
        total += own_s + (children_s or 0.0)
        per_trial = "" if children_s is None else f"{children_s / trials * 1000:.1f}"
        print(f"{name:60} {own_s:>7.2f} {children_s or 0.0:>11.2f} {per_trial:>18}")
    cores = os.cpu_count() or 1
    print(f"all: {total:.2f} CPU s in {wall:.2f} s on {cores} cores "
          f"({total / (wall * cores):.0%} of them); children: the trials' workers (of the "
          "worker host) and servers (of the zygote), reaped by their parents")


def spin_ab(trials: int, rounds: int, image: Path) -> None:
    """Warm sweeps whose servers and workers block at once on a wait
    ($DACBENCH_REMOTE_SPIN_US=0) against ones that poll first (the wire's default, 200 us),
    alternated: wall time and the CPU all processes used (medians). Polling pays where a
    waiting process has a core of its own; a sweep's trials keep the cores busy."""
    from dacbench_remote.wire.channel import DEFAULT_SPIN_US, SPIN_ENV

    def sweep(directory: Path, spin: int) -> tuple[float, float]:
        path = luby_spec(directory, trials,  # the servers' env in the [runtime] table
                         f'{bwrap_lines(image)}\nenv = {{ {SPIN_ENV} = "{spin}" }}', name="spin")
        os.environ[SPIN_ENV] = str(spin)  # the workers' (the worker host inherits it)
        try:
            return timed([sys.executable, "-c", LUBY_SWEEP, str(path)]), timed.busy
        finally:
            del os.environ[SPIN_ENV]

    results: dict[int, list[tuple[float, float]]] = {0: [], DEFAULT_SPIN_US: []}
    with tempfile.TemporaryDirectory(prefix="bench-spin-") as tmp:
        for round_ in range(rounds):
            for spin in results:
                results[spin].append(sweep(Path(tmp) / f"{spin}-{round_}", spin))
    print(f"{trials} one-episode Luby trials, one worker, bwrap image {image.name}, "
          f"{rounds} alternated rounds (medians)")
    print(f"{'waits':44} {'wall s':>8} {'CPU s (all processes)':>22}")
    medians = {}
    for spin, runs in results.items():
        medians[spin] = (statistics.median(w for w, _ in runs), statistics.median(b for _, b in runs))
        name = "block at once" if spin == 0 else f"poll up to {spin} us first (the default)"
        print(f"{name:44} {medians[spin][0]:>8.2f} {medians[spin][1]:>22.2f}")
    blocking, polling = medians[0], medians[DEFAULT_SPIN_US]
    print(f"polling first takes {polling[0] / blocking[0]:.2f}x the wall time and "
          f"{polling[1] / blocking[1]:.2f}x the CPU of blocking at once")


def slurm_chunks(trials: int, image: Path | None) -> None:
    """Slurm (scripts/slurm-cluster.sh up): one-episode Luby trials, warm chunks (one task per
    core) against one trial per task, each sweep timed from its driver's start to its end."""
    runtime = bwrap_lines(image) if image else 'kind = "local"'
    cores = os.cpu_count() or 1

    def spec(directory: Path, per_task: int) -> Path:
        return luby_spec(directory, trials, runtime,
                         f"[executor.slurm]\ntrials_per_task = {per_task}\n"
                         f"array_parallelism = {cores}\n", name="slurm-bench")

    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        chunked = timed([sys.executable, "-c", SLURM_SWEEP,
                         str(spec(Path(tmp) / "chunks", -(-trials // cores)))])
        single = timed([sys.executable, "-c", SLURM_SWEEP, str(spec(Path(tmp) / "single", 1))])
    print(f"Slurm: {trials} one-episode Luby trials ({'bwrap ' + image.name if image else 'local'}"
          f" runtime), {cores} tasks at a time")
    print(f"{'mode':34} {'wall s':>8} {'per trial ms':>13}")
    for name, wall in ((f"warm chunks ({-(-trials // cores)} trials/task)", chunked),
                       ("one trial per task", single)):
        print(f"{name:34} {wall:>8.2f} {wall / trials * 1000:>13.0f}")
    print(f"one trial per task takes {single / chunked:.1f}x the time of warm chunks")


def compile_bytecode() -> None:
    """dacbench_remote's .pyc files first, as an installed package has them: where
    PYTHONDONTWRITEBYTECODE is set (it is on our test machines), every interpreter timed here
    would otherwise compile the package again (0.1-0.2 s each, sweep and loop alike)."""
    import compileall

    compileall.compile_dir(REPO / "dacbench_remote", quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per sweep (default 12)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes per trial (default 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--image", type=Path, help="a .sif for the bwrap rows")
    parser.add_argument("--runtimes", nargs="+", default=["local", "bwrap"])
    parser.add_argument("--luby-warm", action="store_true",
                        help="instead: warm vs fresh container sweeps of one-episode Luby "
                             "trials against an in-process loop (--trials, default 64)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --luby-warm: alternated rounds of loop and warm sweep "
                             "(default 3)")
    parser.add_argument("--fresh-trials", type=int, default=16,
                        help="trials of the fresh sweep in --luby-warm (extrapolated)")
    parser.add_argument("--status-report", type=int, metavar="TRIALS", nargs="?", const=10000,
                        help="instead: time status and report on a synthetic sweep directory "
                             "of TRIALS finished trials (default 10000)")
    parser.add_argument("--slurm", type=int, metavar="TRIALS", nargs="?", const=256,
                        help="instead: TRIALS (default 256) Luby trials on Slurm, warm chunks "
                             "vs one trial per task (needs scripts/slurm-cluster.sh up)")
    parser.add_argument("--scaling", type=int, nargs="*", metavar="TRIALS",
                        help="instead: warm Luby sweeps of these sizes (default 64 256 1024) "
                             "against the in-process loop, per-trial overhead in ms")
    parser.add_argument("--plot", type=Path, help="with --scaling: draw the per-trial ms here")
    parser.add_argument("--cpu-split", type=int, metavar="TRIALS", nargs="?", const=256,
                        help="CPU per trial of each process of a warm Luby sweep (default 256 "
                        "trials)")
    parser.add_argument("--spin", type=int, metavar="ROUNDS", nargs="?", const=5,
                        help="instead: warm Luby sweeps (--trials, default 64) whose waits "
                             "block at once against ones that poll first (the default), "
                             "ROUNDS (default 5) alternated rounds")
    parser.add_argument("--fork-cost", action="store_true",
                        help="instead: Luby env creation in a freshly forked process (as in a "
                             "warm trial's server) against a second one in the same process")
    args = parser.parse_args()
    compile_bytecode()
    print(f"{' '.join(sys.argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores\n")
    if args.status_report:
        status_report(args.status_report)
        return
    if args.cpu_split:
        image = args.image or default_image()
        if image is None:
            sys.exit("--cpu-split needs a Luby image: pass --image")
        cpu_split(args.cpu_split, image)
        return
    if args.fork_cost:
        fork_cost()
        return
    if args.scaling is not None:
        image = args.image or default_image()
        if image is None:
            sys.exit("--scaling needs a Luby image: pass --image")
        scaling(args.scaling or [64, 256, 1024], image, args.plot)
        return
    if args.slurm:
        image = args.image or default_image()
        slurm_chunks(args.slurm, image if "bwrap" in args.runtimes else None)
        return
    if args.spin:
        image = args.image or default_image()
        if image is None:
            raise SystemExit("--spin needs bwrap and an image (--image)")
        spin_ab(args.trials if args.trials != 12 else 64, args.spin, image)
        return
    if args.luby_warm:
        image = args.image or default_image()
        if image is None:
            sys.exit("--luby-warm needs a Luby image: pass --image")
        luby_warm(args.trials if args.trials != 12 else 64, args.fresh_trials, image,
                  args.rounds)
        return

    image = args.image
    if "bwrap" in args.runtimes and image is None:
        image = default_image()
    runtimes = [r for r in args.runtimes if r != "bwrap" or image is not None]
    if image is not None:
        print(f"bwrap image: {image} ({image.stat().st_size / 1e6:.0f} MB)")

    print(f"{args.trials} trials x {args.episodes} episode(s) of gymnasium:CartPole-v1 (random "
          f"agent); machine has {os.cpu_count()} cores")
    print()
    print(f"{'runtime':8} {'workers':>7} {'wall s':>8} {'trials/min':>11} {'overhead/trial s':>17}")
    for runtime in runtimes:
        for workers in args.workers:
            row = sweep_once(args.trials, args.episodes, workers, runtime,
                             image if runtime == "bwrap" else None)
            print(f"{runtime:8} {workers:>7} {row['wall']:>8.1f} {row['per_minute']:>11.1f} "
                  f"{row['overhead']:>17.2f}")
    print()
    print("server start alone (RemoteRunner.start → connected, median of 5):")
    for runtime in runtimes:
        startup = runner_startup(runtime, image if runtime == "bwrap" else None, 5)
        print(f"  {runtime:8} {startup:.2f} s")
    print()
    print("overhead/trial = a trial's wall time minus its episodes' time (worker process, server "
          "start, connect, cleanup), median over trials, measured with the workers given.")


if __name__ == "__main__":
    main()
