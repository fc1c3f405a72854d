"""The apptainer runtime started for real: with a fake binary here, with Apptainer where present."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from dacbench_remote._sys.sockets import new_socket_path
from dacbench_remote.runtimes.apptainer import ApptainerRuntime
from tests.needs import need_apptainer

from .runtime_images import (
    STANDIN_SERVER,
    accepts,
    build_standin_image,
    build_tiny_image,
    talk,
    wait_until,
)

pytestmark = pytest.mark.integration

FAKE_APPTAINER = """#!/bin/sh
# FAKE apptainer for tests, NOT Apptainer: answers --version; for `run` it checks the flags the
# runtime passes, stands in for the socket bind (no mount namespace here: the server's socket
# path inside is mapped back to the host directory bound there), injects APPTAINERENV_* as
# Apptainer's injectEnvHandler does (export NAME="VALUE", `"` escaped, then evaluated), and runs
# the stand-in server on the host.
if [ "$1" = --version ]; then echo "apptainer version 0.0.0-fake"; exit 0; fi
[ "$1" = run ] || { echo "fake apptainer: unexpected action $1" >&2; exit 98; }
shift
bind_from=""; bind_to=""
while [ $# -gt 0 ]; do
    case "$1" in
        --containall|--cleanenv|--nv) shift ;;
        --workdir) [ -d "$2" ] || { echo "fake apptainer: no workdir $2" >&2; exit 96; }; shift 2 ;;
        --bind)
            case "$2" in *:*) [ -n "$bind_to" ] || { bind_from="${2%%:*}"; bind_to="${2#*:}"; } ;; esac
            shift 2 ;;
        *) break ;;
    esac
done
case "$1" in *.sif) shift ;; *) echo "fake apptainer: no image in $1" >&2; exit 97 ;; esac
[ "$1" = --socket ] || { echo "fake apptainer: no --socket" >&2; exit 95; }
socket="$2"; shift 2
if [ -n "$bind_to" ]; then socket="$bind_from${socket#"$bind_to"}"; fi
for name in $(env | sed -n 's/^APPTAINERENV_\\([A-Za-z0-9_]*\\)=.*/\\1/p'); do
    value=$(printenv "APPTAINERENV_$name" | sed 's/"/\\\\"/g')
    eval "export $name=\\"$value\\""
    unset "APPTAINERENV_$name"
done
exec {python} {standin} --socket "$socket" "$@"
"""


@pytest.fixture
def fake_apptainer(tmp_path, monkeypatch) -> Path:
    standin = tmp_path / "standin.py"
    standin.write_text(STANDIN_SERVER)
    binary = tmp_path / "bin" / "apptainer"
    binary.parent.mkdir()
    script = FAKE_APPTAINER.replace("{python}", sys.executable)
    binary.write_text(script.replace("{standin}", str(standin)))
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    return binary


def test_serves_env_and_stops_with_fake_apptainer_binary(fake_apptainer, tmp_path):
    image = build_tiny_image(tmp_path, with_runscript=True)
    runtime = ApptainerRuntime(image, env={"SEED": "7 and more"})
    socket_path = new_socket_path("fakeapp")
    server = runtime.start(socket_path)
    try:
        assert wait_until(lambda: accepts(socket_path) or not server.alive(), 30), \
            server.output_tail()
        assert talk(socket_path, "ENV SEED") == "7 and more"
        assert talk(socket_path, "ARGV") == f"--socket {socket_path} --exit-on-stdin-close"
        assert runtime.describe()["version"] == "apptainer version 0.0.0-fake"
    finally:
        server.stop()
    assert not server.alive() and not socket_path.exists()


def test_lifeline_reaches_the_server_through_fake_apptainer_binary(fake_apptainer, tmp_path):
    image = build_tiny_image(tmp_path, with_runscript=True)
    server = ApptainerRuntime(image).start(new_socket_path("fakeapp"))
    try:
        assert wait_until(lambda: accepts(server.socket_path), 30), server.output_tail()
        server.process.stdin.close()
        assert server.wait_gone(10)
        assert not server.socket_path.exists()  # the server removed it on its way out
    finally:
        server.stop()


def test_runs_the_test_image_with_real_apptainer():
    need_apptainer()
    image = build_standin_image()
    runtime = ApptainerRuntime(image, env={"DACBR_STANDIN": "1"})
    server = runtime.start(new_socket_path("apptainer"))
    try:
        assert wait_until(lambda: accepts(server.socket_path) or not server.alive(), 120), \
            server.output_tail()
        assert talk(server.socket_path, "PING") == "PONG"
        assert talk(server.socket_path, "ENV DACBR_IMAGE_VAR") == "from-image"
        assert talk(server.socket_path, "NET") != ""
    finally:
        server.stop()
    assert not server.alive() and not server.socket_path.exists()


def test_scrubbed_environment_and_exact_values_with_fake_apptainer_binary(fake_apptainer,
                                                                         tmp_path, monkeypatch):
    monkeypatch.setenv("APPTAINER_BINDPATH", "/site/scratch")  # a site module's binds
    monkeypatch.setenv("SINGULARITYENV_LEAK", "from the host")
    monkeypatch.setenv("APPTAINERENV_LEAK2", "from the host")
    image = build_tiny_image(tmp_path, with_runscript=True)
    runtime = ApptainerRuntime(image, env={"PRICE": 'costs $5 `now` "quoted" \\ back'})
    server = runtime.start(new_socket_path("fakeapp"))
    try:
        assert wait_until(lambda: accepts(server.socket_path) or not server.alive(), 30), \
            server.output_tail()
        for name in ("APPTAINER_BINDPATH", "SINGULARITYENV_LEAK", "LEAK", "LEAK2"):
            assert talk(server.socket_path, f"ENV {name}") == "<unset>", name
        assert talk(server.socket_path, "ENV PRICE") == 'costs $5 `now` "quoted" \\ back'
    finally:
        server.stop()


def test_workdir_lives_exactly_as_long_as_the_server_with_fake_apptainer_binary(
        fake_apptainer, tmp_path, monkeypatch):
    monkeypatch.setenv("DACBENCH_REMOTE_WORKDIR", str(tmp_path / "scratch"))
    # A socket root outside /tmp (as $XDG_RUNTIME_DIR's is): bound at /tmp/dacbench-remote/ID.
    sockets = Path(tempfile.mkdtemp(prefix="dacbr-", dir="/var/tmp"))
    monkeypatch.setenv("DACBENCH_REMOTE_SOCKET_DIR", str(sockets))
    image = build_tiny_image(tmp_path, with_runscript=True)
    runtime = ApptainerRuntime(image)
    socket_path = new_socket_path("fakeapp")
    server = runtime.start(socket_path)
    workdir = Path(server.argv[server.argv.index("--workdir") + 1])
    inside = f"/tmp/dacbench-remote/{socket_path.parent.name}"
    assert f"{socket_path.parent}:{inside}" in server.argv
    assert server.argv[server.argv.index("--socket") + 1] == f"{inside}/ctl.sock"
    try:
        assert wait_until(lambda: accepts(socket_path) or not server.alive(), 30), \
            server.output_tail()
        assert workdir == tmp_path / "scratch" / f"dacbench-remote-work-{os.getuid()}" / \
            socket_path.parent.name
        assert workdir.is_dir()
    finally:
        server.stop()
    assert not workdir.exists() and not socket_path.exists()
    shutil.rmtree(sockets)
