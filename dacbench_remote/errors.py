"""One exception hierarchy: every error a user can hit is a DacbenchRemoteError naming what to do."""

from __future__ import annotations


class DacbenchRemoteError(Exception):
    """Base class of every error raised by dacbench-remote."""


class RemoteError(DacbenchRemoteError):
    """The environment (or benchmark) raised inside the server; carries the remote traceback."""

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = ""):
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        text = f"{remote_type}: {remote_message}"
        if remote_traceback:
            text += "\n\n--- remote traceback ---\n" + remote_traceback.rstrip()
        super().__init__(text)


class UnknownBenchmark(DacbenchRemoteError):
    """The benchmark name, class path or gymnasium id does not exist (where it was looked up)."""


class BadConfig(DacbenchRemoteError):
    """A benchmark configuration, sweep spec or config file could not be used."""


class ServerCrashed(DacbenchRemoteError):
    """The server process died or closed the connection while a call was in flight."""


class StartupTimeout(DacbenchRemoteError):
    """The server did not come up before the startup deadline; carries its stderr tail."""


class CallTimeout(DacbenchRemoteError):
    """A call did not answer before its deadline (the server may be stuck in the environment)."""


class VersionMismatch(DacbenchRemoteError):
    """Client and server speak incompatible wire-format versions."""


class RuntimeUnavailable(DacbenchRemoteError):
    """The requested container runtime (or the tools it needs) is not installed here."""


class ImageError(DacbenchRemoteError):
    """Base class of image problems (missing, corrupt, wrong digest, failed build)."""


class ImageNotFound(ImageError):
    """No image exists for the benchmark/experiment, and none could be fetched or built."""


class CorruptImage(ImageError):
    """A file is not a readable SIF image (bad magic, truncated, no system partition)."""


class ChecksumMismatch(ImageError):
    """A downloaded or cached image does not have the sha256 the catalog promises."""

    def __init__(self, path: str, expected: str, actual: str):
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file was removed; try again, or check the catalog entry and the source."
        )


class DownloadError(ImageError):
    """An image could not be downloaded from any of its sources."""


class RecipeError(DacbenchRemoteError):
    """A recipe (.def file) uses something the builder cannot do; names the file and line."""


class BuildError(ImageError):
    """Building an image from a recipe failed; carries the failing step's output tail."""
