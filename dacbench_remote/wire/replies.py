"""How a failure crosses from the server to the host: one error payload, one way to build an
error reply, and one table, `ERROR_KINDS`, from the kind a payload names to the class the host
raises (an unknown kind from a newer server is a RemoteError).

The payload is `{"kind", "type", "message", "traceback"}`; a reply is `{"ok": False, "error":
payload}` (control calls, the zygote's answers) or `[False, payload]` (data-channel frames). A
sweep's worker writes the same payload to a trial's error.json.
"""

from __future__ import annotations

import traceback
from typing import Any

from ..errors import (
    BadConfig,
    EnvironmentClosed,
    NoSuchAttribute,
    ProtocolError,
    RemoteError,
    UnknownBenchmark,
    UnsendableResult,
    VersionMismatch,
)

# The kind a server's error payload names, and the exception the host raises for it. An unknown
# kind (from a newer server) is a RemoteError.
ERROR_KINDS: dict[str, type[Exception]] = {
    "remote": RemoteError,
    "encode": UnsendableResult,
    "closed": EnvironmentClosed,
    "protocol": ProtocolError,
    "attribute": NoSuchAttribute,
    "unknown_benchmark": UnknownBenchmark,
    "bad_config": BadConfig,
    "version": VersionMismatch,
}
_KIND_OF_CLASS = {cls: kind for kind, cls in ERROR_KINDS.items()}


def error_kind(exc: BaseException) -> str:
    """The `ERROR_KINDS` name of `exc`'s nearest class in the table ("remote" for any other)."""
    for cls in type(exc).__mro__:
        kind = _KIND_OF_CLASS.get(cls)
        if kind is not None:
            return kind
    return "remote"


def error_payload(exc: BaseException, kind: str | None = None, *, message: str | None = None,
                  **extra: Any) -> dict:
    """What the host needs to raise `exc` again: kind, type, message, traceback (and `extra`).

    `kind` defaults to `error_kind(exc)`; `message` replaces str(exc). An exception that was
    never raised (or whose traceback was dropped) sends none.
    """
    cls = type(exc)
    name = type_name(cls)
    if message is None:
        try:
            message = str(exc)
        except Exception:  # a broken __str__ must not take the reply (and the connection) with it
            message = f"<{name} whose str() raised>"
    trace = exc.__traceback__
    return {
        **extra,
        "kind": kind or error_kind(exc),
        "type": name,
        "message": message,
        "traceback": "".join(traceback.format_exception(cls, exc, trace)) if trace else "",
    }


def type_name(cls: type) -> str:
    """How a payload names an exception class: `KeyError`, `dacbench_remote.errors.BadConfig`."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def error_reply(exc: BaseException, kind: str | None = None, **extra: Any) -> dict:
    """The reply for a failure: {"ok": False, "error": its payload} (see error_payload)."""
    return {"ok": False, "error": error_payload(exc, kind, **extra)}


def error_from_payload(payload: dict) -> Exception:
    """The host-side exception for a server's error payload, by its kind (`ERROR_KINDS`)."""
    cls = ERROR_KINDS.get(payload.get("kind"), RemoteError)
    if issubclass(cls, RemoteError):
        return cls.from_payload(payload)
    return cls(payload.get("message", ""))
