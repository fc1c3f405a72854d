"""dacbench-remote: DACBench benchmarks and gymnasium envs in rootless containers, as local envs.

The names users import live here. They load lazily, because the server imports this package
inside minimal images that have neither the runner's nor the CLI's dependencies.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RemoteRunner": "host.runner",
    "EpisodeResult": "host.runner",
    "RemoteEnvironmentClient": "host.client",
    "ServerConnection": "host.client",
    "RandomAgent": "host.agents",
    "StaticAgent": "host.agents",
    "make_agent": "host.agents",
    "read_run": "host.results",
    "list_runs": "host.results",
    "to_sb3": "host.sb3",  # imports Stable-Baselines3 only when called
}
_ERRORS = [  # the tree is drawn in errors.py
    "DacbenchRemoteError",
    "RemoteError", "UnsendableResult", "EnvironmentClosed", "ProtocolError", "NoSuchAttribute",
    "UnknownBenchmark", "BadConfig",
    "ServerError", "ServerCrashed", "ConnectionBroken", "VersionMismatch",
    "ServerTimeout", "StartupTimeout", "CallTimeout", "ZygoteError", "ZygoteUnsupported",
    "RuntimeUnavailable", "UnsafeDirectory",
    "ImageError", "ImageNotFound", "CorruptImage", "ChecksumMismatch", "DownloadError",
    "RegistryError", "RegistryAuthError", "RecipeError", "BuildError", "ImageChanged",
    "UnrunnableImage", "UnpackError",
    "SweepAlreadyRunning", "ResultsWriteError",
]
_EXPORTS.update({name: "errors" for name in _ERRORS})
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dacbench_remote' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
