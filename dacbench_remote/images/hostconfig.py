"""Takes the package mirrors a build should use from the build host's own apt and pip setup.

Recipes never name a mirror: the Debian archive comes from the host's apt sources, and pip inside
`%post` gets the host's index, certificates and proxy, so builds work behind whatever mirror or
proxy the machine is configured for.
"""

from __future__ import annotations

import configparser
import locale
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from ..errors import BuildError

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
# pip options that say where and how to download; everything else (constraints, find-links on
# the host's disk, ...) describes the host, not the image.
PIP_NETWORK_KEYS = ("index-url", "extra-index-url", "trusted-host", "cert", "client-cert",
                    "proxy", "timeout", "default-timeout", "retries")
# What requests, and so pip, verifies against when no `cert` is configured.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PIP_CONFIG_NAME = "pip.conf"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                   "NO_PROXY")


def apt_source_entries(sources: Path | None = None,
                       sources_dir: Path | None = None) -> list[tuple[str, list[str]]]:
    """(URI, suites) for every `deb` entry in one-line and deb822 apt source files, in order."""
    sources = APT_SOURCES if sources is None else sources
    sources_dir = APT_SOURCES_DIR if sources_dir is None else sources_dir
    entries: list[tuple[str, list[str]]] = []
    files = [sources] if sources.is_file() else []
    if sources_dir.is_dir():
        files += sorted(p for p in sources_dir.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue  # unreadable source files are apt's business, not a reason to fail
        entries += _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
    return entries


def _one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            entries.append((uri, fields.get("suites", "").split()))
    return entries


def debian_mirror(os_version: str, entries: list[tuple[str, list[str]]] | None = None) -> str | None:
    """The host's Debian archive URL for `os_version` (e.g. bookworm), or None if it has none.

    Prefers an entry for that exact suite; otherwise any entry for a plain Debian suite (the
    same archive serves all of them). Security and update archives are never chosen.
    """
    entries = apt_source_entries() if entries is None else entries
    plain = [(uri, suites) for uri, suites in entries
             if any(not re.search(r"[-/](security|updates|backports)$", s) for s in suites)]
    for uri, suites in plain:
        if os_version in suites:
            return uri
    debian_suites = {"bullseye", "bookworm", "trixie", "forky", "sid", "unstable", "testing",
                     "stable", "oldstable"}
    for uri, suites in plain:
        if debian_suites & set(suites):
            return uri
    return None


def pip_config_files(environ: Mapping[str, str] | None = None,
                     prefix: str = sys.prefix) -> list[Path]:
    """pip's configuration files on Linux, lowest precedence first, found as pip finds them.

    Global ($XDG_CONFIG_DIRS/pip, /etc), user (~/.pip, $XDG_CONFIG_HOME/pip; skipped when
    PIP_CONFIG_FILE names an existing file), site (the interpreter's prefix), PIP_CONFIG_FILE;
    none at all when PIP_CONFIG_FILE is /dev/null. Missing files are listed too.
    """
    environ = os.environ if environ is None else environ
    explicit = environ.get("PIP_CONFIG_FILE")
    if explicit == os.devnull:
        return []
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    config_dirs = (environ.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg").split(os.pathsep)
    files = [Path(d).expanduser() / "pip" / PIP_CONFIG_NAME for d in config_dirs]
    files.append(Path("/etc") / PIP_CONFIG_NAME)
    if not (explicit and Path(explicit).exists()):
        config_home = environ.get("XDG_CONFIG_HOME", "").strip() or str(home / ".config")
        files += [home / ".pip" / PIP_CONFIG_NAME, Path(config_home) / "pip" / PIP_CONFIG_NAME]
    files.append(Path(prefix) / PIP_CONFIG_NAME)
    if explicit:
        files.append(Path(explicit))
    return files


def pip_settings(environ: Mapping[str, str] | None = None,
                 files: list[Path] | None = None) -> dict[str, str]:
    """The host pip's network settings (index, certificates, proxy), merged as pip merges them.

    Read from pip's own configuration files and PIP_* variables rather than through
    `pip config list`: the interpreter running us may have no pip at all (a venv made with
    --without-pip, uv, pipx), and the builds still need the host's index and CA bundle.
    Local paths and file:// indexes are dropped: they do not exist in a build.
    """
    environ = os.environ if environ is None else environ
    files = pip_config_files(environ) if files is None else files
    merged: dict[tuple[str, str], str] = {}
    for path in files:
        merged.update(_read_pip_config(path))
    for name, value in environ.items():
        if name.startswith("PIP_"):
            merged[(":env:", _pip_key(name[4:]))] = value
    settings: dict[str, str] = {}
    # pip's precedence: [global] < [install] < PIP_* variables, whichever file each came from.
    for section in ("global", "install", ":env:"):
        for (where, key), value in merged.items():
            if where == section and key in PIP_NETWORK_KEYS:
                settings[key] = value
    if "cert" not in settings:
        # pip (through requests) verifies against these when no cert is configured.
        bundle = next((environ[n] for n in CA_BUNDLE_VARIABLES if environ.get(n)), None)
        if bundle:
            settings["cert"] = bundle
    return _portable(settings)


def _read_pip_config(path: Path) -> dict[tuple[str, str], str]:
    parser = configparser.RawConfigParser()
    try:
        # Unreadable files are skipped, as pip skips them.
        parser.read(path, encoding=locale.getpreferredencoding(False))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise BuildError(f"pip configuration {path} cannot be parsed ({exc}); pip itself "
                         "refuses it too: fix or remove it") from exc
    return {(section, _pip_key(key)): value for section in parser.sections()
            for key, value in parser.items(section)}


def _pip_key(name: str) -> str:
    return name.lower().replace("_", "-").removeprefix("--")


def _portable(settings: dict[str, str]) -> dict[str, str]:
    result = {}
    for key, value in settings.items():
        if key in ("index-url", "extra-index-url"):
            urls = [u for u in value.split() if not u.startswith("file:") and "://" in u]
            if urls:
                result[key] = " ".join(urls)
        elif key in ("cert", "client-cert"):
            if Path(value).is_file():
                result[key] = value
        else:
            result[key] = value
    return result


def proxy_environment() -> dict[str, str]:
    """The host's proxy variables, which downloads inside the build must also go through."""
    return {name: os.environ[name] for name in PROXY_VARIABLES if name in os.environ}
