"""The config file and its env-var overrides: values, where they came from, and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dacbench_remote.config import default_config_path, load_config
from dacbench_remote.errors import BadConfig


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A clean environment whose HOME is a temp dir (no XDG vars, no overrides)."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home")}


def write_config(env: dict[str, str], text: str) -> Path:
    path = Path(env["HOME"]) / ".config" / "dacbench-remote" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_a_file(home):
    config = load_config(environ=home)
    assert config.path == Path(home["HOME"]) / ".config/dacbench-remote/config.toml"
    assert config.cache_dir == Path(home["HOME"]) / ".cache/dacbench-remote"
    assert config.catalog_dirs == []
    assert config.default_runtime == "auto"
    assert config.binds == [] and config.env == {}
    assert set(config.source.values()) == {"default"}
    assert "does not exist; defaults apply" in config.describe()


def test_xdg_dirs_are_used_and_relative_ones_ignored(home, tmp_path):
    env = {**home, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_CACHE_HOME": str(tmp_path / "c")}
    config = load_config(environ=env)
    assert config.path == tmp_path / "cfg/dacbench-remote/config.toml"
    assert config.cache_dir == tmp_path / "c/dacbench-remote"
    relative = {**home, "XDG_CONFIG_HOME": "rel/cfg", "XDG_CACHE_HOME": "rel/cache"}
    expected = Path(home["HOME"]) / ".config/dacbench-remote/config.toml"
    assert default_config_path(relative) == expected
    assert load_config(environ=relative).cache_dir == Path(home["HOME"]) / ".cache/dacbench-remote"


def test_file_values_and_their_source(home, tmp_path):
    path = write_config(home, f"""
cache_dir = "images"
catalog_dirs = ["{tmp_path}/cat-a", "cat-b"]
default_runtime = "bwrap"
binds = ["/data:/data:ro", "/scratch"]
wheelhouse = ["wheels", "/opt/more-wheels"]
offline = true
[env]
OMP_NUM_THREADS = 1
MODE = "fast"
""")
    config = load_config(environ=home)
    assert config.wheelhouse == [path.parent / "wheels", Path("/opt/more-wheels")]
    assert config.offline is True
    # Relative paths are relative to the config file, not to the working directory.
    assert config.cache_dir == path.parent / "images"
    assert config.catalog_dirs == [tmp_path / "cat-a", path.parent / "cat-b"]
    assert config.default_runtime == "bwrap"
    assert config.binds == ["/data:/data:ro", "/scratch"]
    assert config.env == {"OMP_NUM_THREADS": "1", "MODE": "fast"}
    assert config.source == dict.fromkeys(config.source, f"file {path}")
    text = config.describe()
    assert f"cache_dir = {path.parent / 'images'}    [file {path}]" in text
    assert "env = OMP_NUM_THREADS=1, MODE=fast" in text


def test_env_vars_override_the_file(home, tmp_path):
    write_config(home, 'cache_dir = "/f"\ncatalog_dirs = ["/a"]\ndefault_runtime = "bwrap"\n')
    env = {
        **home,
        "DACBENCH_REMOTE_CACHE": str(tmp_path / "env-cache"),
        "DACBENCH_REMOTE_CATALOG": os.pathsep.join([str(tmp_path / "x"), str(tmp_path / "y")]),
        "DACBENCH_REMOTE_RUNTIME": "local",
    }
    config = load_config(environ=env)
    assert config.cache_dir == tmp_path / "env-cache"
    assert config.catalog_dirs == [tmp_path / "x", tmp_path / "y"]
    assert config.default_runtime == "local"
    assert config.source["cache_dir"] == "env $DACBENCH_REMOTE_CACHE"
    assert config.source["catalog_dirs"] == "env $DACBENCH_REMOTE_CATALOG"
    assert config.source["default_runtime"] == "env $DACBENCH_REMOTE_RUNTIME"


def test_empty_env_values_count_as_unset(home):
    env = {**home, "DACBENCH_REMOTE_CACHE": "", "DACBENCH_REMOTE_RUNTIME": ""}
    config = load_config(environ=env)
    assert config.source["cache_dir"] == "default"
    assert config.default_runtime == "auto"


def test_config_path_from_env(home, tmp_path):
    other = tmp_path / "elsewhere.toml"
    other.write_text('default_runtime = "apptainer"\n')
    config = load_config(environ={**home, "DACBENCH_REMOTE_CONFIG": str(other)})
    assert config.path == other
    assert config.default_runtime == "apptainer"


def test_missing_config_named_by_env_is_an_error(home, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(BadConfig, match=r"nope\.toml.*DACBENCH_REMOTE_CONFIG.*does not exist"):
        load_config(environ={**home, "DACBENCH_REMOTE_CONFIG": str(missing)})


def test_load_config_reads_the_process_environment(home, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", home["HOME"])
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("DACBENCH_REMOTE_CONFIG", raising=False)
    monkeypatch.setenv("DACBENCH_REMOTE_CACHE", str(tmp_path / "pc"))
    assert load_config().cache_dir == tmp_path / "pc"


def test_bad_toml_names_file_and_line(home):
    path = write_config(home, 'cache_dir = "unterminated\n')
    with pytest.raises(BadConfig, match="not valid TOML") as info:
        load_config(environ=home)
    assert str(path) in str(info.value) and "line 1" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("cache_dir = 3", "`cache_dir`", "must be a non-empty string path"),
        ('catalog_dirs = "/one/dir"', "`catalog_dirs`", "must be a list of non-empty strings"),
        ("binds = [1, 2]", "`binds`", "must be a list of non-empty strings"),
        ('default_runtime = "docker"', "`default_runtime`", "is not a runtime; choose one of auto"),
        ("[env]\nDEBUG = true", "`env.DEBUG`", "must be a string or number"),
        ('env = "A=1"', "`env`", "must be a table"),
        ('cache-dir = "/x"', "cache-dir", "unknown key(s)"),
    ],
)
def test_wrong_values_name_file_key_and_problem(home, text, key, problem):
    path = write_config(home, text + "\n")
    with pytest.raises(BadConfig) as info:
        load_config(environ=home)
    message = str(info.value)
    assert str(path) in message and key in message and problem in message


def test_bad_runtime_from_env_names_the_variable(home):
    with pytest.raises(BadConfig, match=r"\$DACBENCH_REMOTE_RUNTIME = 'podman' is not a runtime"):
        load_config(environ={**home, "DACBENCH_REMOTE_RUNTIME": "podman"})


def test_wheelhouse_and_offline_from_the_environment_and_their_errors(home, tmp_path):
    write_config(home, 'wheelhouse = "w"\n')
    config = load_config(environ=home)
    assert config.wheelhouse == [default_config_path(home).parent / "w"] and not config.offline
    env = {**home, "DACBENCH_REMOTE_WHEELHOUSE": f"{tmp_path}/a:{tmp_path}/b",
           "DACBENCH_REMOTE_OFFLINE": "yes"}
    config = load_config(environ=env)
    assert config.wheelhouse == [tmp_path / "a", tmp_path / "b"] and config.offline
    assert config.source["wheelhouse"] == "env $DACBENCH_REMOTE_WHEELHOUSE"
    assert f"wheelhouse = {tmp_path}/a:{tmp_path}/b" in config.describe()
    with pytest.raises(BadConfig, match=r"\$DACBENCH_REMOTE_OFFLINE = 'maybe' must be 1/true"):
        load_config(environ={**home, "DACBENCH_REMOTE_OFFLINE": "maybe"})
    write_config(home, 'offline = "yes"\n')
    with pytest.raises(BadConfig, match="`offline` must be true or false, got 'yes'"):
        load_config(environ=home)
