"""Mirrors from the host's own apt and pip configuration, read from real files as apt and pip do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacbench_remote.errors import BuildError
from dacbench_remote.images import hostconfig

REPO = Path(__file__).resolve().parent.parent


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
    # The suite runs on Debian 12 (CI's machine), whose sources the image builds use.
    entries = hostconfig.apt_source_entries()
    assert entries, "this host has no apt sources: the tests expect Debian 12"
    assert hostconfig.debian_mirror("bookworm") in [uri for uri, _ in entries]


def test_pip_settings_keep_network_options_and_drop_host_paths(tmp_path: Path):
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
    settings = hostconfig.pip_settings({"PIP_RETRIES": "7", "PIP_FIND_LINKS": "/opt/x"}, [config])
    assert settings == {"index-url": "https://index.invalid/simple",
                        "extra-index-url": "https://extra.invalid/simple",
                        "cert": str(cert), "timeout": "60", "retries": "7"}
    # find-links, constraint: the host's paths; client-cert: the file does not exist.


def test_pip_settings_merge_as_pip_does(tmp_path: Path):
    global_file, user_file = tmp_path / "global.conf", tmp_path / "user.conf"
    global_file.write_text("[install]\ntimeout = 30\n[global]\nindex_url = https://g.invalid/s\n")
    user_file.write_text("[global]\ntimeout = 10\nindex-url = https://u.invalid/s\n"
                         "retries = 1\n[freeze]\nproxy = http://ignored.invalid\n")
    settings = hostconfig.pip_settings({"PIP_RETRIES": "9"}, [global_file, user_file])
    # A later file wins within a section, [install] beats [global] from any file, and PIP_*
    # variables beat both; other commands' sections do not count for `pip install`.
    assert settings == {"index-url": "https://u.invalid/s", "timeout": "30", "retries": "9"}


def test_pip_config_files_in_pips_order(tmp_path: Path):
    home = tmp_path / "home"
    environ = {"HOME": str(home), "XDG_CONFIG_DIRS": "/a:/b"}
    assert hostconfig.pip_config_files(environ, prefix="/venv") == [
        Path("/a/pip/pip.conf"), Path("/b/pip/pip.conf"), Path("/etc/pip.conf"),
        home / ".pip" / "pip.conf", home / ".config" / "pip" / "pip.conf",
        Path("/venv/pip.conf")]
    explicit = tmp_path / "mine.conf"
    explicit.write_text("[global]\n")
    files = hostconfig.pip_config_files({"HOME": str(home), "PIP_CONFIG_FILE": str(explicit)},
                                        prefix="/venv")
    # An existing PIP_CONFIG_FILE replaces the user's files and comes last.
    assert files == [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf"),
                     Path("/venv/pip.conf"), explicit]
    assert hostconfig.pip_config_files({"PIP_CONFIG_FILE": os.devnull}) == []


def test_ca_bundle_variables_count_when_pip_has_no_cert(tmp_path: Path):
    bundle, pinned = tmp_path / "bundle.pem", tmp_path / "pinned.pem"
    bundle.write_text("B\n")
    pinned.write_text("P\n")
    assert hostconfig.pip_settings({"REQUESTS_CA_BUNDLE": str(bundle)}, []) == {
        "cert": str(bundle)}
    assert hostconfig.pip_settings({"CURL_CA_BUNDLE": str(bundle), "PIP_CERT": str(pinned)},
                                   []) == {"cert": str(pinned)}


def test_pip_settings_need_no_pip(tmp_path: Path):
    # The reported bug: the user's dacbench-remote ran from a venv made with --without-pip, so
    # asking `python -m pip config` found nothing and the build lost the host's CA bundle.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    cert = tmp_path / "ca.pem"
    cert.write_text("CERT\n")
    shown = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import json; from dacbench_remote.images import hostconfig; "
         "print(json.dumps(hostconfig.pip_settings()))"],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
             "PIP_CONFIG_FILE": os.devnull, "PIP_CERT": str(cert)},
        capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout) == {"cert": str(cert)}


def test_unparsable_pip_config_is_named(tmp_path: Path):
    broken = tmp_path / "pip.conf"
    broken.write_text("index-url = https://no-section.invalid\n")
    with pytest.raises(BuildError, match=r"pip configuration .*pip\.conf cannot be parsed"):
        hostconfig.pip_settings({}, [broken])
    # Missing or unreadable files are skipped, as pip skips them.
    assert hostconfig.pip_settings({}, [tmp_path / "absent.conf", tmp_path]) == {}


def test_proxy_variables_are_passed_on(monkeypatch):
    for name in hostconfig.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert hostconfig.proxy_environment() == {"https_proxy": "http://proxy.invalid:3128"}
