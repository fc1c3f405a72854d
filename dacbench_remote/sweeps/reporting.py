"""What a sweep found (`report`: summary table and plot) and how far it is (`status`)."""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import signal
import statistics
import sys
import threading
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .._sys.files import atomic_output
from .._sys.procfs import ProcessRecord, boot_id, hostname
from .slurm_jobs import live_tasks
from .sweepdir import SweepDir, read_json, read_jsonl
from .tables import PENDING, TablesState, episode_rows, mark_plotted, tables_state, write_tables
from .trial import DONE, FAILED, TIMED_OUT, Trial

RUNNING = "running"
MATPLOTLIB_MISSING = ("matplotlib is not installed, so no plot was written; "
                      "`pip install matplotlib` and run the report again")


@dataclass
class SummaryRow:
    benchmark: str
    agent: str
    trials: int
    episodes: int
    mean_return: float
    std_return: float


@dataclass
class SweepReport:
    """Summary per benchmark x agent, trial counts, failures, and the plot's path (if written)."""

    sweep_dir: Path
    counts: dict[str, int]
    rows: list[SummaryRow]
    failures: list[tuple[str, str, str]]  # (trial id, label, error)
    plot: Path | None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        c = self.counts
        lines = [f"sweep {self.sweep_dir}",
                 f"trials: {c.get('total', 0)} total, {c.get(DONE, 0)} done, "
                 f"{c.get(FAILED, 0)} failed, {c.get(TIMED_OUT, 0)} timed out, "
                 f"{c.get(PENDING, 0)} not finished"]
        if self.rows:
            lines.append("")
            lines += _table(["benchmark", "agent", "trials", "episodes", "mean return", "std"],
                            [[r.benchmark, r.agent, str(r.trials), str(r.episodes),
                              f"{r.mean_return:.4g}", f"{r.std_return:.4g}"] for r in self.rows])
        if self.failures:
            lines += ["", "failed and timed-out trials:"]
            for trial_id, label, error in self.failures:
                first = (error or "").strip().splitlines()[0] if error else "(no message)"
                lines.append(f"  {trial_id}  {label}: {first}")
        if self.plot:
            lines += ["", f"plot: {self.plot}"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def report(sweep_dir: str | Path, *, plot: bool = True) -> SweepReport:
    """Summarise a sweep: mean/std return per benchmark x agent, trial counts, failures, a PNG.

    Also rewrites results.csv and trials.csv (and report.png) from the journal, unless they were
    made from the journal as it is now (tables.json says so). Print the result.
    """
    layout = SweepDir(sweep_dir)
    current = tables_state(layout)
    # A plot to draw: its process imports matplotlib while this one reads the journal and
    # writes the tables.
    plotter = PlotProcess() if plot and not current.plot else None
    try:
        return _report(layout, plot, current, plotter)
    finally:
        if plotter is not None:
            plotter.close()


def _report(layout: SweepDir, plot: bool, current: TablesState,
            plotter: PlotProcess | None) -> SweepReport:
    """The report; `plotter` draws the plot (None: no plot wanted, or it is current)."""
    trials = layout.trials()
    rows = episode_rows(layout, trials)
    by_id = {t.id: t for t in trials}
    drawing = plotter is not None and bool(rows)
    if drawing:
        plotter.draw(panels_of(rows, by_id), layout.plot)
    if not current.tables:
        write_tables(layout, trials, rows=rows)
    outcomes = layout.outcomes()
    counts: Counter = Counter(total=len(trials))
    failures = []
    for trial in trials:
        outcome = outcomes.get(trial.id)
        counts[outcome.status if outcome else PENDING] += 1
        if outcome and outcome.status in (FAILED, TIMED_OUT):
            failures.append((trial.id, f"[{outcome.status}] {trial.label()}", outcome.error))
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        trial = by_id[row["trial_id"]]
        grouped[(trial.variant(), trial.agent)].append(row)
    summary = []
    for (variant, agent), group in grouped.items():
        returns = [float(r["return"]) for r in group]
        summary.append(SummaryRow(variant, agent, len({r["trial_id"] for r in group}),
                                  len(returns), statistics.fmean(returns),
                                  statistics.stdev(returns) if len(returns) > 1 else 0.0))
    result = SweepReport(layout.path, dict(counts), summary, failures, None)
    if drawing:
        try:
            result.plot = plotter.result()
            mark_plotted(layout)
        except ImportError:
            result.notes.append(MATPLOTLIB_MISSING)
    elif plot and current.plot and rows:
        result.plot = layout.plot
    return result


def plot_returns(rows: list[dict], trials: dict[str, Trial], path: Path) -> Path:
    """Return per episode per agent (mean over seeds, band = ±1 std), one panel per benchmark."""
    return draw_panels(panels_of(rows, trials), path)


def panels_of(rows: list[dict], trials: dict[str, Trial]) -> dict:
    """What the plot shows: variant -> agent -> episode -> the returns of that episode."""
    panels: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        trial = trials[row["trial_id"]]
        panels[trial.variant()][trial.agent][int(row["episode"])].append(float(row["return"]))
    return {variant: {agent: dict(episodes) for agent, episodes in agents.items()}
            for variant, agents in panels.items()}


def draw_panels(panels: dict, path: Path) -> Path:
    """The plot of `panels_of`, written to `path` (a PNG)."""
    # The Figure API, not pyplot: no global figure state, no GUI backend, and faster to import.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    count = len(panels)
    columns = min(count, 3)
    lines = math.ceil(count / columns)
    figure = Figure(figsize=(5 * columns, 3.6 * lines))
    axes = figure.subplots(lines, columns, squeeze=False)
    for ax, (variant, agents) in zip(axes.flat, sorted(panels.items()), strict=False):
        for agent, episodes in sorted(agents.items()):
            xs = sorted(episodes)
            means = [statistics.fmean(episodes[x]) for x in xs]
            stds = [statistics.pstdev(episodes[x]) for x in xs]
            ax.plot(xs, means, marker="o", markersize=3, label=agent)
            ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                            [m + s for m, s in zip(means, stds, strict=True)], alpha=0.2)
        ax.set_title(variant if len(variant) <= 60 else variant[:57] + "...", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("episode")
        ax.set_ylabel("return")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    figure.tight_layout()
    with atomic_output(path, durable=False, perms=0o666) as tmp:
        figure.savefig(tmp, dpi=100, format="png")  # the temporary name ends in .tmp
    return path


# How a forked plot process ends: drawn, or matplotlib could not be imported.
_DRAWN, _FAILED, _NO_MATPLOTLIB = 0, 1, 3


class PlotProcess:
    """Draws the report's plot in a forked process that starts importing matplotlib at once
    (0.3-0.5 s), so that a cold report does that while it reads the journal and writes the
    tables, on another core. Only a single-threaded process forks (a fork copies no other
    thread, and one may hold a lock the child needs); otherwise, or with `fork=False`, `draw`
    draws here. `close` ends a process that was given nothing to draw."""

    def __init__(self, fork: bool = True):
        self.pid: int | None = None
        self._pipe: int | None = None
        self._path: Path | None = None
        self._error: ImportError | None = None
        if not fork or threading.active_count() != 1:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # never returns into the caller's code
            code = _FAILED
            try:
                os.close(write_end)
                code = _draw_from_pipe(read_end)
            finally:
                os._exit(code)
        os.close(read_end)
        self.pid, self._pipe = pid, write_end

    def draw(self, panels: dict, path: Path):
        """Start drawing `panels` to `path` (in the forked process, if there is one)."""
        self._path = path
        if self.pid is None:  # here and now; result() says how it went
            try:
                draw_panels(panels, path)
            except ImportError as exc:
                self._error = exc
            return path
        data = pickle.dumps((panels, str(path)))
        try:
            with os.fdopen(self._pipe, "wb") as pipe:
                pipe.write(data)
        except BrokenPipeError:  # the process ended already (no matplotlib): result() says
            pass
        finally:
            self._pipe = None
        return path

    def result(self) -> Path:
        """The plot's path once drawn; ImportError when matplotlib is missing."""
        if self.pid is None:
            if self._error is not None:
                raise self._error
            return self._path
        pid, self.pid = self.pid, None
        _, status = os.waitpid(pid, 0)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else _FAILED
        if code == _NO_MATPLOTLIB:
            raise ImportError("matplotlib is not installed")
        if code != _DRAWN:
            raise RuntimeError("the report's plot could not be drawn (the error is above)")
        return self._path

    def close(self) -> None:
        """Stop a process still running (nothing to draw, or an error here) and reap it."""
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self.pid is not None:
            pid, self.pid = self.pid, None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _draw_from_pipe(read_end: int) -> int:
    """In the forked process: import matplotlib, then draw what comes through the pipe."""
    try:
        try:
            import matplotlib.figure  # noqa: F401 - the point: imported before the data comes
        except ImportError:
            return _NO_MATPLOTLIB
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        if not data:
            return _DRAWN  # nothing to draw after all
        panels, path = pickle.loads(data)
        draw_panels(panels, Path(path))
        return _DRAWN
    except BaseException:
        traceback.print_exc()
        return _FAILED


@dataclass
class SweepStatus:
    """Progress of a sweep: trial counts by state, running trials' episodes, the driver, jobs."""

    sweep_dir: Path
    counts: dict[str, int]
    running: list[tuple[str, str, int, int]]  # (trial id, label, episodes so far, episodes)
    driver: str
    jobs: dict[str, list[str]]

    def __str__(self) -> str:
        c = self.counts
        total = c.get("total", 0)
        finished = c.get(DONE, 0) + c.get(FAILED, 0) + c.get(TIMED_OUT, 0)
        lines = [f"sweep {self.sweep_dir}: {finished}/{total} trials finished "
                 f"({c.get(DONE, 0)} done, {c.get(FAILED, 0)} failed, "
                 f"{c.get(TIMED_OUT, 0)} timed out), {c.get(RUNNING, 0)} running, "
                 f"{c.get(PENDING, 0)} waiting", f"driver: {self.driver}"]
        for job_id, tasks in self.jobs.items():
            lines.append(f"slurm job {job_id}: {len(tasks)} task(s) queued or running")
        for trial_id, label, done, episodes in self.running:
            lines.append(f"  running {trial_id}  {label}: episode {done}/{episodes}")
        return "\n".join(lines)


def status(sweep_dir: str | Path) -> SweepStatus:
    """How far a (possibly running) sweep is; cheap enough to call every few seconds."""

    layout = SweepDir(sweep_dir)
    trials = layout.trials()
    outcomes = layout.outcomes()
    counts: Counter = Counter(total=len(trials))
    running = []
    for trial in trials:
        outcome = outcomes.get(trial.id)
        if outcome is not None:
            counts[outcome.status] += 1
        elif _is_running(layout.running_file(trial.id)):
            counts[RUNNING] += 1
            progress = len(read_jsonl(layout.trial_dir(trial.id) / "runner.jsonl"))
            running.append((trial.id, trial.label(), progress, trial.episodes))
        else:
            counts[PENDING] += 1
    jobs = {}
    for job_id in layout.job_ids():
        tasks = live_tasks(job_id)
        if tasks:
            jobs[job_id] = tasks
    return SweepStatus(layout.path, dict(counts), running, _driver_state(layout), jobs)


def _is_running(path: Path) -> bool:
    """A running.json whose processes live (or live on another host, where we cannot look)."""
    data = read_json(path)
    if not isinstance(data, dict):
        return False
    if data.get("host") != hostname() or data.get("boot_id") != boot_id():
        return True
    records = [ProcessRecord.from_dict(p) for p in data.get("processes", [])]
    return any(r.alive() for r in records)


def _driver_state(layout: SweepDir) -> str:
    data = read_json(layout.driver)
    if not isinstance(data, dict):
        return "not running"
    where = f"pid {data.get('pid')} on {data.get('host')}, run {data.get('run_id')}"
    here = data.get("host") == hostname() and data.get("boot_id") == boot_id()
    if here and not ProcessRecord(int(data["pid"]), int(data["start"])).alive():
        return f"not running (the last run, {where}, ended without cleaning up)"
    return f"running ({where}, {data.get('executor')} executor)"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *body]]
