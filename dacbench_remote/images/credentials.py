"""Registry credentials from where users already keep them: env vars, Docker's and Apptainer's files.

Precedence (first match wins): an explicit `Credentials` argument, $DACBENCH_REMOTE_REGISTRY_*,
$APPTAINER_DOCKER_*, `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`),
`~/.apptainer/docker-config.json` (what `apptainer registry login` writes), `~/.apptainer/remote.yaml`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadConfig

USERNAME_ENV = "DACBENCH_REMOTE_REGISTRY_USERNAME"
PASSWORD_ENV = "DACBENCH_REMOTE_REGISTRY_PASSWORD"
APPTAINER_USERNAME_ENV = "APPTAINER_DOCKER_USERNAME"
APPTAINER_PASSWORD_ENV = "APPTAINER_DOCKER_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    """A user name and secret (password, or an identity token), plus where they were found.

    The secret never shows in repr or str, so a logged or raised object cannot leak it.
    """

    username: str
    password: str = field(repr=False)
    origin: str = "given explicitly"
    identity_token: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"credentials of {self.username or '(token)'} ({self.origin})"


def find_credentials(host: str, *, environ: Mapping[str, str] | None = None,
                     home: Path | None = None) -> Credentials | None:
    """The first credentials for registry `host` (`name[:port]`) in precedence order, or None."""
    environ = os.environ if environ is None else environ
    home = home if home is not None else Path(environ.get("HOME") or Path.home())
    for user_var, password_var in ((USERNAME_ENV, PASSWORD_ENV),
                                   (APPTAINER_USERNAME_ENV, APPTAINER_PASSWORD_ENV)):
        if environ.get(user_var) or environ.get(password_var):
            return Credentials(environ.get(user_var, ""), environ.get(password_var, ""),
                               f"${user_var} and ${password_var}")
    docker_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else \
        home / ".docker"
    for file in (docker_dir / "config.json", home / ".apptainer" / "docker-config.json"):
        found = _from_docker_config(file, host)
        if found:
            return found
    return _from_remote_yaml(home / ".apptainer" / "remote.yaml", host)


def _host_of(key: str) -> str:
    """`https://host:port/v1/` and `oras://host` name the host `host:port`, as Docker matches."""
    return re.sub(r"^[a-z]+://", "", key.strip()).split("/", 1)[0].lower()


def _from_docker_config(file: Path, host: str) -> Credentials | None:
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadConfig(f"{file}: cannot read registry credentials ({type(exc).__name__}); "
                        "fix or remove the file") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    for key, entry in (auths or {}).items():
        if _host_of(key) != host.lower() or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials("", "", str(file), identity_token=str(entry["identitytoken"]))
        if entry.get("auth"):
            return _basic_pair(str(entry["auth"]), f"{file} (auths.{key}.auth)")
        if entry.get("username") is not None:
            return Credentials(str(entry["username"]), str(entry.get("password", "")), str(file))
    return None


def _basic_pair(encoded: str, origin: str) -> Credentials:
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise BadConfig(f"{origin} is not base64 of `user:password`; log in again") from None
    return Credentials(username, password, origin)


def _from_remote_yaml(file: Path, host: str) -> Credentials | None:
    """Apptainer keeps one entry per service under `Credentials:` (URI, Auth or Username/Password).

    Only that list is read, with a line parser for the shape Apptainer writes: no YAML library
    is a dependency of ours.
    """
    if not file.is_file():
        return None
    for entry in _yaml_list(file.read_text(encoding="utf-8"), "Credentials"):
        if _host_of(entry.get("URI", "")) != host.lower():
            continue
        auth = entry.get("Auth", "")
        if auth.startswith("Basic "):
            return _basic_pair(auth.removeprefix("Basic ").strip(), f"{file} (Credentials)")
        if auth.startswith("Bearer "):
            return Credentials("", "", f"{file} (Credentials)",
                               identity_token=auth.removeprefix("Bearer ").strip())
        if entry.get("Username") or entry.get("Password"):
            return Credentials(entry.get("Username", ""), entry.get("Password", ""),
                               f"{file} (Credentials)")
    return None


def _yaml_list(text: str, key: str) -> list[dict[str, str]]:
    """The mappings of a top-level block list `key:` of `- Name: value` items (scalars only)."""
    items: list[dict[str, str]] = []
    inside = False
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "-")):
            inside = line.rstrip(":").strip() == key
            continue
        if not inside:
            continue
        stripped = line.strip()
        if stripped.startswith("- "):
            items.append({})
            stripped = stripped[2:].strip()
        name, sep, value = stripped.partition(":")
        if sep and items:
            items[-1][name.strip()] = value.strip().strip("'\"")
    return items
