"""Takes the package mirrors a build should use from the build host's own apt and pip setup.

Recipes never name a mirror: the Debian archive comes from the host's apt sources, and pip inside
`%post` gets the host's index, certificates and proxy, so builds work behind whatever mirror or
proxy the machine is configured for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
# pip options that say where and how to download; everything else (constraints, find-links on
# the host's disk, ...) describes the host, not the image.
PIP_NETWORK_KEYS = ("index-url", "extra-index-url", "trusted-host", "cert", "client-cert",
                    "proxy", "timeout", "default-timeout", "retries")
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


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """The host pip's network settings (index, certificates, proxy), merged as pip merges them.

    Read through `pip config list`, so config files and PIP_* variables count exactly as they do
    for the host's pip. Local paths and file:// indexes are dropped: they do not exist in a build.
    """
    try:
        listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                                text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    settings: dict[str, str] = {}
    # Later lines win, matching pip's own precedence (files, then environment).
    for line in listed.stdout.splitlines():
        match = re.match(r"^([^.=]*)\.([\w-]+)=(.*)$", line.strip())
        if match is None:
            continue
        section, key, value = match.groups()
        if section not in ("global", "install", ":env:") or key not in PIP_NETWORK_KEYS:
            continue
        settings[key] = value.strip().strip("'\"")
    return _portable(settings)


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
