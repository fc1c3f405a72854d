"""One exception hierarchy: every error a user can hit is a DacbenchRemoteError naming what to do.

How errors cross from the server to the host is in wire/replies.py: an exception in the server
becomes an error payload naming its kind, and the host raises the class that kind names in one
table, `ERROR_KINDS`. The tree (with `ERROR_KINDS` names):

    DacbenchRemoteError
    ├── RemoteError                 "remote": the env (or benchmark) raised in the server
    │   ├── UnsendableResult        "encode": it returned a value the wire format cannot carry
    │   ├── EnvironmentClosed       "closed": the env was closed; make a new one
    │   └── ProtocolError           "protocol": client and server disagree about a request
    ├── UnknownBenchmark            "unknown_benchmark"
    ├── BadConfig                   "bad_config"
    ├── ServerError                 the server, or the connection to it, cannot go on
    │   ├── ServerCrashed
    │   ├── ConnectionBroken
    │   ├── VersionMismatch         "version"
    │   ├── ServerTimeout           (also a TimeoutError)
    │   │   ├── StartupTimeout
    │   │   └── CallTimeout
    │   ├── ZygoteError             (also a RuntimeError)
    │   │   └── ZygoteUnsupported
    │   └── AgentCrashed            an agent's container died (train/evaluate)
    ├── AgentError                  the agent (in its image) raised: the type and traceback
    ├── RuntimeUnavailable
    ├── UnsafeDirectory
    ├── ImageError
    │   ├── ImageNotFound
    │   ├── CorruptImage
    │   ├── ChecksumMismatch
    │   ├── ImageChanged
    │   ├── UnrunnableImage
    │   ├── UnpackError
    │   ├── DownloadError
    │   │   └── RegistryError
    │   │       └── RegistryAuthError
    │   ├── RecipeError
    │   └── BuildError
    ├── SweepAlreadyRunning
    └── ResultsWriteError           (also an OSError)

    NoSuchAttribute                 "attribute": an AttributeError, as for a local env
"""

from __future__ import annotations


class DacbenchRemoteError(Exception):
    """Base class of every error raised by dacbench-remote."""


# -- errors the server reports ----------------------------------------------------------------


class RemoteError(DacbenchRemoteError):
    """The environment (or benchmark) raised inside the server; carries the remote traceback.

    The server stays usable. Its subclasses name failures the server reports for an env that
    did not raise: a result it cannot send, a closed env, a request it does not understand.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = ""):
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        text = f"{remote_type}: {remote_message}"
        if remote_traceback:
            text += "\n\n--- remote traceback ---\n" + remote_traceback.rstrip()
        super().__init__(text)

    @classmethod
    def from_payload(cls, payload: dict) -> RemoteError:
        """The exception a server's error payload describes (see `error_from_payload`)."""
        return cls(payload.get("type", "Exception"), payload.get("message", ""),
                   payload.get("traceback", ""))


class UnsendableResult(RemoteError):
    """The environment returned a value (result, render frame, space) the wire cannot carry.

    The message names the place inside the value; `remote_type` is the codec's TypeError or
    ValueError. Return plain or numpy values there, or convert this one.
    """


class _RefusedByServer(RemoteError):
    """The server itself refused the request (the env did not run): made from a message alone."""

    def __init__(self, message: str, remote_traceback: str = ""):
        super().__init__(type(self).__name__, message, remote_traceback)

    @classmethod
    def from_payload(cls, payload: dict) -> RemoteError:
        return cls(payload.get("message", ""), payload.get("traceback", ""))


class EnvironmentClosed(_RefusedByServer):
    """The environment was closed (by close(), or in its server); make a new one to go on."""


class ProtocolError(_RefusedByServer):
    """Client and server disagree about a request (an unknown operation or env, a bad frame).

    A bug, or a host and an image from different dacbench-remote versions: please report it.
    """


class NoSuchAttribute(AttributeError):
    """The remote environment has no such public attribute (an AttributeError, like locally)."""


class UnknownBenchmark(DacbenchRemoteError):
    """The benchmark name, class path or gymnasium id does not exist (where it was looked up)."""


class BadConfig(DacbenchRemoteError):
    """A benchmark configuration, keyword, sweep spec or config file could not be used."""


# -- the server failed ------------------------------------------------------------------------


class ServerError(DacbenchRemoteError):
    """The server process, or the connection to it, cannot go on: make a new env or runner.

    Unlike a RemoteError (the env raised, the server is fine), the env that raised this is
    unusable; catch this to restart.
    """


class ServerCrashed(ServerError):
    """The server process died or closed the connection while a call was in flight."""


class ConnectionBroken(ServerError):
    """A call was interrupted (Ctrl-C, SIGTERM) with a message half sent or half received.

    The server is fine, but that environment's connection cannot be resynchronised: close the
    environment and make a new one. (An interrupt while merely waiting for a reply is harmless:
    the next call skips the late reply.)
    """


class VersionMismatch(ServerError):
    """Client and server speak incompatible wire-format versions."""


class ServerTimeout(ServerError, TimeoutError):
    """The server did not answer in time (also a TimeoutError)."""


class StartupTimeout(ServerTimeout):
    """The server did not come up before the startup deadline; carries its stderr tail."""


class CallTimeout(ServerTimeout):
    """A call did not answer before its deadline (the server may be stuck in the environment)."""


class ZygoteError(ServerError, RuntimeError):
    """A zygote server refused or failed a request, or did not start (also a RuntimeError)."""


class ZygoteUnsupported(ZygoteError):
    """The image's server predates --zygote: run a fresh server per trial instead."""


# -- the host -----------------------------------------------------------------------------------


class AgentCrashed(ServerError):
    """The agent's container (its trainer process) died while training or evaluating; the
    message names the agent, its image, how it ended and its last output."""


class AgentError(DacbenchRemoteError):
    """The agent in its image raised (e.g. the algorithm refused a hyperparameter): the remote
    type, message and traceback, as the trainer reported them."""

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = ""):
        super().__init__(f"the agent raised {remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class RuntimeUnavailable(DacbenchRemoteError):
    """The requested container runtime (or the tools it needs) is not installed here."""


class UnsafeDirectory(DacbenchRemoteError):
    """A directory that must be private to you (sockets, mounts) is not a directory you own.

    Remove it, or point dacbench-remote at another place (the message says how).
    """


class ImageError(DacbenchRemoteError):
    """Base class of image problems (missing, corrupt, wrong digest, bad recipe, failed build)."""


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


class ImageChanged(ImageError):
    """An image is not, or cannot be shown to be, the one a recorded run used (sha256)."""


class UnrunnableImage(ImageError):
    """A readable image lacks what starting a server needs (a shell, a runscript)."""


class UnpackError(ImageError):
    """An image's root filesystem could not be unpacked (disk full, or a damaged image)."""


class DownloadError(ImageError):
    """An image could not be downloaded from any of its sources."""


class RegistryError(DownloadError):
    """An OCI registry refused a request or holds something that is not a SIF image."""


class RegistryAuthError(RegistryError):
    """A registry wants credentials, or rejected the ones given (they are never shown)."""


class RecipeError(ImageError):
    """A recipe (.def file) uses something the builder cannot do; names the file and line."""


class BuildError(ImageError):
    """Building an image from a recipe failed; carries the failing step's output tail."""


class SweepAlreadyRunning(DacbenchRemoteError):
    """Another run of this sweep is still going (a driver, or Slurm tasks); wait or cancel it."""


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
