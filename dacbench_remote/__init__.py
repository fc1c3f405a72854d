"""dacbench-remote: DACBench benchmarks and gymnasium envs in rootless containers, as local envs.

The names users import live here. The error classes are plain imports. The rest load on first
use, through the one `__getattr__` below: the server imports this package inside minimal images
that have neither the runner's nor the command line's dependencies (Stable-Baselines3 is
imported only when `to_sb3` is called). Type checkers see the real names through the
TYPE_CHECKING imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._sys.lazy import lazy_names
from .errors import (  # the tree is drawn in errors.py
    AgentCrashed,
    AgentError,
    BadConfig,
    BuildError,
    CallTimeout,
    ChecksumMismatch,
    ConnectionBroken,
    CorruptImage,
    DacbenchRemoteError,
    DownloadError,
    EnvironmentClosed,
    ImageChanged,
    ImageError,
    ImageNotFound,
    NoSuchAttribute,
    ProtocolError,
    RecipeError,
    RegistryAuthError,
    RegistryError,
    RemoteError,
    ResultsWriteError,
    RuntimeUnavailable,
    ServerCrashed,
    ServerError,
    ServerTimeout,
    StartupTimeout,
    SweepAlreadyRunning,
    UnknownBenchmark,
    UnpackError,
    UnrunnableImage,
    UnsafeDirectory,
    UnsendableResult,
    VersionMismatch,
    ZygoteError,
    ZygoteUnsupported,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .experiments.driver import run_experiment
    from .host.agents import RandomAgent, StaticAgent, make_agent
    from .host.client import RemoteEnvironmentClient, ServerConnection
    from .host.results import list_runs, read_run
    from .host.runner import EpisodeResult, RemoteRunner
    from .host.sb3 import to_sb3
    from .host.training import AgentRun, evaluate_agent, train_agent
    from .host.vector import RemoteVectorEnv

# The other public names, each with the module that defines it, imported on first use.
_LAZY = {
    "RemoteRunner": ".host.runner",
    "EpisodeResult": ".host.runner",
    "RemoteEnvironmentClient": ".host.client",
    "ServerConnection": ".host.client",
    "RemoteVectorEnv": ".host.vector",
    "RandomAgent": ".host.agents",
    "StaticAgent": ".host.agents",
    "make_agent": ".host.agents",
    "read_run": ".host.results",
    "list_runs": ".host.results",
    "to_sb3": ".host.sb3",
    "run_experiment": ".experiments.driver",
    "train_agent": ".host.training",
    "evaluate_agent": ".host.training",
    "AgentRun": ".host.training",
}

__all__ = [
    "AgentCrashed",
    "AgentError",
    "AgentRun",
    "BadConfig",
    "BuildError",
    "CallTimeout",
    "ChecksumMismatch",
    "ConnectionBroken",
    "CorruptImage",
    "DacbenchRemoteError",
    "DownloadError",
    "EnvironmentClosed",
    "EpisodeResult",
    "ImageChanged",
    "ImageError",
    "ImageNotFound",
    "NoSuchAttribute",
    "ProtocolError",
    "RandomAgent",
    "RecipeError",
    "RegistryAuthError",
    "RegistryError",
    "RemoteEnvironmentClient",
    "RemoteError",
    "RemoteRunner",
    "RemoteVectorEnv",
    "ResultsWriteError",
    "RuntimeUnavailable",
    "ServerConnection",
    "ServerCrashed",
    "ServerError",
    "ServerTimeout",
    "StartupTimeout",
    "StaticAgent",
    "SweepAlreadyRunning",
    "UnknownBenchmark",
    "UnpackError",
    "UnrunnableImage",
    "UnsafeDirectory",
    "UnsendableResult",
    "VersionMismatch",
    "ZygoteError",
    "ZygoteUnsupported",
    "__version__",
    "evaluate_agent",
    "list_runs",
    "make_agent",
    "read_run",
    "run_experiment",
    "to_sb3",
    "train_agent",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
