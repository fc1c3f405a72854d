"""The host's side of DACBench's baselines (`dacbench:...` agent specs), which run in the server
next to the env (server/baselines): follow a run there, and write its DACBench logs here.

RemoteRunner.run_baseline starts the runs; `dacbench-remote baselines` (host/baseline_suite)
runs DACBench's whole run_baselines grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .._sys.files import atomic_output
from ..errors import BadConfig
from .client import ServerConnection

if TYPE_CHECKING:
    from .runner import EpisodeResult

# How long one wait for a run's end lasts before the host hears how far it got.
POLL_SECONDS = 1.0


@dataclass
class BaselineRun:
    """One run of a DACBench baseline next to the env: one seed, its episodes and its logs.

    `episodes` are EpisodeResults as `RemoteRunner.run` returns them; `steps` (when asked for)
    holds per episode its `observations` (the reset's first), `actions` and `rewards`; `logs`
    maps paths under an output directory (`LubyBenchmark/optimal_0/agent.json`) to the text
    DACBench's Logger wrote there.
    """

    spec: str
    benchmark_class: str
    seed: int
    experiment_name: str
    agent: str
    dacbench: str | None
    episodes: list[EpisodeResult] = field(default_factory=list)
    steps: list[dict] | None = None
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def log_dir(self) -> PurePosixPath:
        """The run's directory under an output directory: BENCHMARK/EXPERIMENT_SEED."""
        return PurePosixPath(self.benchmark_class, self.experiment_name)

    def write_logs(self, outdir: str | Path) -> Path:
        """Write the logs under `outdir` as run_baselines lays them out
        (`outdir/LubyBenchmark/optimal_0/PerformanceTrackingWrapper.jsonl`, ...), each file
        replaced whole; DACBench's `load_logs` and `log2dataframe` read them.

        Returns:
            The run's directory.
        """
        outdir = Path(outdir)
        for relative, text in self.logs.items():
            with atomic_output(outdir / _safe_relative(relative), perms=0o666) as tmp:
                tmp.write_text(text, encoding="utf-8")
        return outdir / self.log_dir


def _safe_relative(path: str) -> PurePosixPath:
    """A log path from the server, refused unless it stays inside the output directory."""
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BadConfig(f"the server sent a log file path outside the output directory: {path!r}")
    return relative


def follow_baseline(connection: ServerConnection, request: dict,
                    progress: Callable[[int], Any] | None = None) -> dict:
    """Start a run in the server and wait for its result, calling `progress(episodes_done)`
    whenever more episodes have finished. Whatever stops the wait (Ctrl-C, an error) cancels
    the run in the server."""
    job_id = connection.start_baseline(request)
    seen = 0
    try:
        while True:
            status = connection.wait_baseline(job_id, POLL_SECONDS)
            if progress is not None and status["episodes"] != seen:
                progress(status["episodes"])
            seen = status["episodes"]
            if status["done"]:
                return status["result"]
    except BaseException:
        with contextlib.suppress(Exception):  # a dead server cannot be asked; it took the run
            connection.cancel_baseline(job_id)
        raise
