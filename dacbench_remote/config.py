"""The user's settings: one TOML file, overridden by env vars, remembering where each came from."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_ENV = "DACBENCH_REMOTE_CONFIG"
CACHE_ENV = "DACBENCH_REMOTE_CACHE"
CATALOG_ENV = "DACBENCH_REMOTE_CATALOG"
RUNTIME_ENV = "DACBENCH_REMOTE_RUNTIME"
WHEELHOUSE_ENV = "DACBENCH_REMOTE_WHEELHOUSE"
OFFLINE_ENV = "DACBENCH_REMOTE_OFFLINE"

# Every runtime a user can name (here, in RemoteRunner, `--runtime`, a sweep's [runtime] kind):
# "auto" is Apptainer if installed, else bubblewrap; "singularity" is the apptainer runtime under
# its other name (either runs whichever of the two binaries is installed).
RUNTIME_NAMES = ("auto", "apptainer", "singularity", "bwrap", "local")
# The runtimes that run an image (a .sif) in a container.
CONTAINER_RUNTIMES = ("auto", "apptainer", "singularity", "bwrap")

KEYS = ("cache_dir", "catalog_dirs", "default_runtime", "binds", "env", "wheelhouse", "offline")


@dataclass
class Config:
    """Resolved settings; `source[key]` tells where each value came from (printed by `config`)."""

    path: Path
    cache_dir: Path
    catalog_dirs: list[Path] = field(default_factory=list)
    default_runtime: str = "auto"
    binds: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Image builds: pip in %post installs from these directories first; offline: no index.
    wheelhouse: list[Path] = field(default_factory=list)
    offline: bool = False
    source: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Human-readable listing of every setting, its value and its origin."""
        values = {
            "cache_dir": str(self.cache_dir),
            "catalog_dirs": os.pathsep.join(str(p) for p in self.catalog_dirs) or "(none)",
            "default_runtime": self.default_runtime,
            "binds": ", ".join(self.binds) or "(none)",
            "env": ", ".join(f"{k}={v}" for k, v in self.env.items()) or "(none)",
            "wheelhouse": os.pathsep.join(str(p) for p in self.wheelhouse) or "(none)",
            "offline": "true" if self.offline else "false",
        }
        exists = "" if self.path.is_file() else " (does not exist; defaults apply)"
        lines = [f"config file: {self.path}{exists}"]
        lines += [f"{key} = {values[key]}    [{self.source[key]}]" for key in KEYS]
        return "\n".join(lines)


def _home_dir(environ: Mapping[str, str], xdg_var: str, fallback: str) -> Path:
    value = environ.get(xdg_var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path(environ.get("HOME") or Path.home()) / fallback


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the config file is read from: $DACBENCH_REMOTE_CONFIG, else the XDG config dir."""
    environ = os.environ if environ is None else environ
    override = environ.get(CONFIG_ENV, "")
    if override:
        return Path(override).expanduser()
    return _home_dir(environ, "XDG_CONFIG_HOME", ".config") / "dacbench-remote" / "config.toml"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The image cache if nothing is configured: $XDG_CACHE_HOME/dacbench-remote or ~/.cache/..."""
    environ = os.environ if environ is None else environ
    return _home_dir(environ, "XDG_CACHE_HOME", ".cache") / "dacbench-remote"


def _path_value(file: Path, key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise BadConfig(f"{file}: `{key}` must be a non-empty string path, got {value!r}")
    path = Path(value).expanduser()
    # Relative paths in the file mean "next to the config file", not "wherever I ran from".
    return path if path.is_absolute() else file.parent / path


def _string_list(file: Path, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadConfig(f"{file}: `{key}` must be a list of non-empty strings, got {value!r}")
    return list(value)


def _runtime(where: str, value: Any) -> str:
    if value not in RUNTIME_NAMES:
        raise BadConfig(
            f"{where} = {value!r} is not a runtime; choose one of {', '.join(RUNTIME_NAMES)}"
        )
    return value


def _env_paths(value: str) -> list[Path]:
    """An os.pathsep-separated variable's paths (empty parts skipped), absolute."""
    return [Path(p).expanduser().absolute() for p in value.split(os.pathsep) if p]


def _flag(where: str, value: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if value.strip().lower() not in words:
        raise BadConfig(f"{where} = {value!r} must be 1/true/yes or 0/false/no")
    return words[value.strip().lower()]


def _env_table(file: Path, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadConfig(f"{file}: `env` must be a table of NAME = \"value\", got {value!r}")
    env: dict[str, str] = {}
    for name, item in value.items():
        # bool is an int subclass, but `true` has no obvious spelling as an env value.
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise BadConfig(f"{file}: `env.{name}` must be a string or number, got {item!r}")
        env[name] = str(item)
    return env


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's table; BadConfig naming the file (a `what` file) when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadConfig(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise BadConfig(f"{path}: cannot read {what}: {exc}") from exc
    return parse_toml(text, str(path))


def parse_toml(text: str, name: str) -> dict[str, Any]:
    """TOML text's table; BadConfig naming where it came from (`name`) when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig(f"{name}: not valid TOML: {exc}") from exc


def _read_file(path: Path) -> dict[str, Any]:
    data = read_toml(path, "config file")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise BadConfig(
            f"{path}: unknown key(s) {', '.join(unknown)}; known keys are {', '.join(KEYS)}"
        )
    return data


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the config file (if any), apply env overrides; BadConfig names file, key, problem."""
    environ = os.environ if environ is None else environ
    # A path the user named (argument or $DACBENCH_REMOTE_CONFIG) must exist; the default may not.
    explicit = path is not None or bool(environ.get(CONFIG_ENV))
    origin = "given explicitly" if path is not None else f"from ${CONFIG_ENV}"
    path = (Path(path) if path is not None else default_config_path(environ)).absolute()
    data: dict[str, Any] = {}
    if path.is_file():
        data = _read_file(path)
    elif explicit:
        raise BadConfig(f"config file {path} ({origin}) does not exist or is not a file")

    config = Config(path=path, cache_dir=default_cache_dir(environ))
    source = dict.fromkeys(KEYS, "default")
    in_file = f"file {path}"
    if "cache_dir" in data:
        config.cache_dir = _path_value(path, "cache_dir", data["cache_dir"])
        source["cache_dir"] = in_file
    if "catalog_dirs" in data:
        dirs = _string_list(path, "catalog_dirs", data["catalog_dirs"])
        config.catalog_dirs = [_path_value(path, "catalog_dirs", d) for d in dirs]
        source["catalog_dirs"] = in_file
    if "default_runtime" in data:
        config.default_runtime = _runtime(f"{path}: `default_runtime`", data["default_runtime"])
        source["default_runtime"] = in_file
    if "binds" in data:
        config.binds, source["binds"] = _string_list(path, "binds", data["binds"]), in_file
    if "env" in data:
        config.env, source["env"] = _env_table(path, data["env"]), in_file
    if "wheelhouse" in data:
        value = data["wheelhouse"]
        dirs = [value] if isinstance(value, str) else _string_list(path, "wheelhouse", value)
        config.wheelhouse = [_path_value(path, "wheelhouse", d) for d in dirs]
        source["wheelhouse"] = in_file
    if "offline" in data:
        if not isinstance(data["offline"], bool):
            raise BadConfig(f"{path}: `offline` must be true or false, got {data['offline']!r}")
        config.offline, source["offline"] = data["offline"], in_file

    # Environment variables win over the file; empty values count as unset.
    if environ.get(CACHE_ENV):
        config.cache_dir = Path(environ[CACHE_ENV]).expanduser().absolute()
        source["cache_dir"] = f"env ${CACHE_ENV}"
    if environ.get(CATALOG_ENV):
        config.catalog_dirs = _env_paths(environ[CATALOG_ENV])
        source["catalog_dirs"] = f"env ${CATALOG_ENV}"
    if environ.get(RUNTIME_ENV):
        config.default_runtime = _runtime(f"${RUNTIME_ENV}", environ[RUNTIME_ENV])
        source["default_runtime"] = f"env ${RUNTIME_ENV}"
    if environ.get(WHEELHOUSE_ENV):
        config.wheelhouse = _env_paths(environ[WHEELHOUSE_ENV])
        source["wheelhouse"] = f"env ${WHEELHOUSE_ENV}"
    if environ.get(OFFLINE_ENV):
        config.offline = _flag(f"${OFFLINE_ENV}", environ[OFFLINE_ENV])
        source["offline"] = f"env ${OFFLINE_ENV}"
    config.source = source
    return config
