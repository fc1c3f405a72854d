"""Mirrors from the host's own apt and pip configuration, read from real files and a real pip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacbench_remote.images import hostconfig


def write_sources(tmp_path: Path, one_line: str = "", deb822: dict[str, str] | None = None):
    sources = tmp_path / "sources.list"
    sources.write_text(one_line)
    directory = tmp_path / "sources.list.d"
    directory.mkdir()
    for name, text in (deb822 or {}).items():
        (directory / name).write_text(text)
    return sources, directory


def test_one_line_sources_with_options_and_comments(tmp_path: Path):
    sources, directory = write_sources(tmp_path, """\
# deb http://commented.invalid/debian bookworm main
deb-src http://src.invalid/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://a.invalid/debian bookworm main
deb http://sec.invalid/debian-security bookworm-security main
""")
    entries = hostconfig.apt_source_entries(sources, directory)
    assert entries == [("http://a.invalid/debian", ["bookworm"]),
                       ("http://sec.invalid/debian-security", ["bookworm-security"])]


def test_deb822_sources_skip_disabled_and_source_stanzas(tmp_path: Path):
    sources, directory = write_sources(tmp_path, deb822={"debian.sources": """\
Types: deb
# a comment
URIs: http://b.invalid/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb-src
URIs: http://src.invalid/debian
Suites: bookworm

Enabled: no
Types: deb
URIs: http://off.invalid/debian
Suites: bookworm
""", "ignored.txt": "deb http://never.invalid/debian bookworm main\n"})
    assert hostconfig.apt_source_entries(sources, directory) == [
        ("http://b.invalid/debian", ["bookworm", "bookworm-updates"])]


def test_debian_mirror_prefers_the_exact_suite_and_never_security():
    entries = [("http://sec.invalid/debian-security", ["bookworm-security"]),
               ("http://trixie.invalid/debian", ["trixie"]),
               ("http://bookworm.invalid/debian", ["bookworm", "bookworm-updates"])]
    assert hostconfig.debian_mirror("bookworm", entries) == "http://bookworm.invalid/debian"
    # Another Debian suite's archive serves bookworm too.
    assert hostconfig.debian_mirror("bookworm", entries[:2]) == "http://trixie.invalid/debian"
    assert hostconfig.debian_mirror("bookworm", entries[:1]) is None
    assert hostconfig.debian_mirror("bookworm", [("http://u.invalid/ubuntu", ["jammy"])]) is None


def test_debian_mirror_reads_this_hosts_sources():
    entries = hostconfig.apt_source_entries()
    if not entries:
        pytest.skip("this host has no apt sources (not a Debian-like system)")
    mirror = hostconfig.debian_mirror("bookworm")
    assert mirror is None or mirror in [uri for uri, _ in entries]


def test_pip_settings_keep_network_options_and_drop_host_paths(tmp_path: Path, monkeypatch):
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.skip("pip is not installed for this interpreter")
    cert = tmp_path / "ca.pem"
    cert.write_text("not really a certificate\n")
    config = tmp_path / "pip.conf"
    config.write_text(f"""\
[global]
index-url = https://index.invalid/simple
extra-index-url = file:///opt/local/simple https://extra.invalid/simple
find-links = /opt/wheels
constraint = /etc/some/constraints.txt
cert = {cert}
client-cert = {tmp_path / "missing.pem"}
timeout = 60
""")
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_RETRIES", "7")
    settings = hostconfig.pip_settings()
    assert settings["index-url"] == "https://index.invalid/simple"
    assert settings["extra-index-url"] == "https://extra.invalid/simple"
    assert settings["cert"] == str(cert)
    assert settings["retries"] == "7"
    assert "find-links" not in settings and "constraint" not in settings
    assert "client-cert" not in settings  # the file does not exist


def test_pip_settings_without_pip_are_empty(tmp_path: Path):
    assert hostconfig.pip_settings(str(tmp_path / "no-such-python")) == {}


def test_proxy_variables_are_passed_on(monkeypatch):
    for name in hostconfig.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert hostconfig.proxy_environment() == {"https_proxy": "http://proxy.invalid:3128"}
