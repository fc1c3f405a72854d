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


class ConnectionBroken(DacbenchRemoteError):
    """A call was interrupted (Ctrl-C, SIGTERM) with a message half sent or half received.

    The server is fine, but that environment's connection cannot be resynchronised: close the
    environment and make a new one. (An interrupt while merely waiting for a reply is harmless:
    the next call skips the late reply.)
    """


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


class RegistryError(DownloadError):
    """An OCI registry refused a request or holds something that is not a SIF image."""


class RegistryAuthError(RegistryError):
    """A registry wants credentials, or rejected the ones given (they are never shown)."""


class RecipeError(DacbenchRemoteError):
    """A recipe (.def file) uses something the builder cannot do; names the file and line."""


class BuildError(ImageError):
    """Building an image from a recipe failed; carries the failing step's output tail."""


class ResultsWriteError(DacbenchRemoteError, OSError):
    """A results record could not be appended whole (disk full, file size limit, ...).

    An OSError too (with the cause's errno), so `except OSError` around a run still catches it.
    """

    def __init__(self, path: str, cause: OSError, rolled_back: bool = True):
        self.path = path
        self.message = (
            f"could not append a record to the results file {path}: "
            f"{cause.strerror or cause}. "
            + ("The file is as it was before this record. " if rolled_back else
               "A partial line may remain at its end (readers ignore it). ")
            + "Free space on its filesystem (or raise the file size limit), or write results "
            "elsewhere (results_path= / --out), then run again."
        )
        super().__init__(self.message)
        self.errno = cause.errno
        self.strerror = cause.strerror
        self.filename = path

    def __str__(self) -> str:
        return self.message
