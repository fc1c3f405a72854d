"""The error tree (callers catch at the level they need) and the kind table between server and host."""

from __future__ import annotations

import pytest

import dacbench_remote
from dacbench_remote import errors
from dacbench_remote.errors import (
    BadConfig,
    CallTimeout,
    ConnectionBroken,
    DacbenchRemoteError,
    EnvironmentClosed,
    ImageError,
    NoSuchAttribute,
    ProtocolError,
    RecipeError,
    RemoteError,
    ServerCrashed,
    ServerError,
    ServerTimeout,
    StartupTimeout,
    SweepAlreadyRunning,
    UnknownBenchmark,
    UnsendableResult,
    VersionMismatch,
)
from dacbench_remote.wire.replies import (
    ERROR_KINDS,
    error_from_payload,
    error_kind,
    error_payload,
    error_reply,
)


@pytest.mark.parametrize(("error", "bases"), [
    (ServerCrashed, (ServerError,)),
    (ConnectionBroken, (ServerError,)),
    (VersionMismatch, (ServerError,)),
    (StartupTimeout, (ServerTimeout, ServerError, TimeoutError)),
    (CallTimeout, (ServerTimeout, ServerError, TimeoutError)),
    (UnsendableResult, (RemoteError,)),
    (EnvironmentClosed, (RemoteError,)),
    (ProtocolError, (RemoteError,)),
    (RecipeError, (ImageError,)),
    (SweepAlreadyRunning, (DacbenchRemoteError,)),
])
def test_each_error_can_be_caught_by_its_bases(error, bases):
    assert issubclass(error, DacbenchRemoteError)
    for base in bases:
        assert issubclass(error, base)


def test_a_remote_error_is_not_a_server_error_the_env_raised_and_the_server_is_fine():
    assert not issubclass(RemoteError, ServerError)
    assert not issubclass(ServerError, RemoteError)


def test_every_error_class_is_exported_and_named_in_the_tree():
    classes = [value for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, BaseException)
               and value.__module__ == errors.__name__ and not name.startswith("_")]
    for cls in classes:
        assert getattr(dacbench_remote, cls.__name__) is cls
        assert f" {cls.__name__} " in errors.__doc__ or f" {cls.__name__}\n" in errors.__doc__


def test_timeouts_keep_their_message_as_timeout_errors():
    error = CallTimeout("step() got no answer within 3 s")
    assert str(error) == "step() got no answer within 3 s"
    with pytest.raises(TimeoutError):
        raise error


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as exc:
        return exc


@pytest.mark.parametrize("error", [
    RemoteError("ValueError", "bad action"),
    UnsendableResult("TypeError", "cannot encode step() result[4]['x']"),
    EnvironmentClosed("environment e1 is closed"),
    ProtocolError("unknown data-channel operation 'jump'"),
    NoSuchAttribute("the environment has no attribute 'x'"),
    UnknownBenchmark("unknown DACBench benchmark 'Nope'"),
    BadConfig("Luby rejected its config"),
    VersionMismatch("client speaks version 1, server speaks version 2"),
])
def test_the_server_side_classes_cross_as_their_kind_and_come_back_as_themselves(error):
    payload = error_payload(_raised(error))
    assert ERROR_KINDS[payload["kind"]] is type(error)
    again = error_from_payload(payload)
    assert type(again) is type(error)
    assert error.args[0].split(": ")[-1] in str(again)


def test_the_envs_own_exception_crosses_as_a_remote_error_with_its_type_and_traceback():
    payload = error_payload(_raised(KeyError("missing")))
    assert (payload["kind"], payload["type"]) == ("remote", "KeyError")
    error = error_from_payload(payload)
    assert type(error) is RemoteError and error.remote_type == "KeyError"
    assert "Traceback" in error.remote_traceback


def test_an_attribute_error_from_env_code_stays_a_remote_error():
    assert error_kind(AttributeError("x")) == "remote"
    assert error_kind(NoSuchAttribute("x")) == "attribute"


def test_an_explicit_kind_and_message_win_and_an_unraised_error_has_no_traceback():
    payload = error_payload(TypeError("cannot encode x"), "encode", message="returned x", pid=3)
    assert payload == {"pid": 3, "kind": "encode", "type": "TypeError", "message": "returned x",
                       "traceback": ""}


def test_an_unknown_kind_from_a_newer_server_is_a_remote_error():
    error = error_from_payload({"kind": "future", "type": "Odd", "message": "m"})
    assert type(error) is RemoteError and str(error) == "Odd: m"


def test_a_broken_str_does_not_break_the_payload():
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert "whose str() raised" in error_payload(Unprintable())["message"]


def test_an_error_reply_is_unwrapped_into_its_class_on_the_host():
    from dacbench_remote.host.client import unwrap_reply

    reply = error_reply(_raised(BadConfig("Luby rejected its config")), pid=7)
    assert reply["ok"] is False and reply["error"]["pid"] == 7
    with pytest.raises(BadConfig, match="Luby rejected its config"):
        unwrap_reply(reply)


def test_image_problems_are_raised_as_their_precise_class():
    """`except ImageNotFound` (or any other subclass) must catch what it names: ImageError itself
    is only a base to catch them all, never raised bare."""
    import ast
    from pathlib import Path

    bare = []
    for path in Path(errors.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and getattr(node.exc.func, "id", None) == "ImageError"):
                bare.append(f"{path.name}:{node.lineno}")
    assert bare == []
