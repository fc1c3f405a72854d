"""The apptainer runtime started for real: with a fake binary here, with Apptainer where present."""

from __future__ import annotations

import os
import sys
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
# runtime passes, maps APPTAINERENV_* as Apptainer does, and runs the stand-in server on the host
# with the arguments that follow the image.
if [ "$1" = --version ]; then echo "apptainer version 0.0.0-fake"; exit 0; fi
[ "$1" = run ] || { echo "fake apptainer: unexpected action $1" >&2; exit 98; }
shift
while [ $# -gt 0 ]; do
    case "$1" in
        --containall|--cleanenv|--nv) shift ;;
        --bind) shift 2 ;;
        *) break ;;
    esac
done
case "$1" in *.sif) shift ;; *) echo "fake apptainer: no image in $1" >&2; exit 97 ;; esac
for name in $(env | sed -n 's/^APPTAINERENV_\\([A-Za-z0-9_]*\\)=.*/\\1/p'); do
    eval "export $name=\\"\\$APPTAINERENV_$name\\""
done
exec {python} {standin} "$@"
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
