"""The apptainer runtime's command lines and errors; no Apptainer is installed on CI machines."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dacbench_remote._sys.apptainer import find_apptainer
from dacbench_remote.errors import BadConfig, CorruptImage, RuntimeUnavailable
from dacbench_remote.images.sif import write_sif
from dacbench_remote.runtimes.apptainer import ApptainerRuntime
from tests.needs import need_tools

SOCKET = Path("/run/user/1000/dacbench-remote/srv-00000001/ctl.sock")


def test_default_command_line():
    runtime = ApptainerRuntime("/images/base.sif")
    assert runtime.run_argv("/usr/bin/apptainer", SOCKET) == [
        "/usr/bin/apptainer", "run", "--containall", "--cleanenv",
        "--bind", "/run/user/1000/dacbench-remote/srv-00000001",  # this server's alone
        "/images/base.sif", "--socket", str(SOCKET), "--exit-on-stdin-close",
    ]


def test_gpu_binds_and_switched_off_isolation():
    runtime = ApptainerRuntime("/images/base.sif", gpu=True, containall=False, cleanenv=False,
                               binds=["/data:/mnt/data:ro", "/results"])
    argv = runtime.run_argv("/opt/bin/singularity", SOCKET)
    assert argv[:3] == ["/opt/bin/singularity", "run", "--nv"]
    assert "--containall" not in argv and "--cleanenv" not in argv
    binds = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--bind"]
    assert binds == ["/run/user/1000/dacbench-remote/srv-00000001", "/data:/mnt/data:ro",
                     "/results:/results"]
    assert argv.index("/images/base.sif") > argv.index("--nv")


def test_a_socket_directory_shared_with_other_servers_is_refused(tmp_path):
    (tmp_path / "srv-1.sock").touch()  # another server's socket (the old flat layout)
    with pytest.raises(BadConfig, match=r"holds srv-1\.sock: a container gets this whole "
                                        r"directory, so each server needs its own"):
        ApptainerRuntime(tmp_path / "x.sif").start(tmp_path / "srv-2.sock")


def test_user_env_travels_as_apptainerenv_or_singularityenv(monkeypatch):
    monkeypatch.setenv("HOST_ONLY", "1")
    runtime = ApptainerRuntime("/x.sif", env={"SEED": "3"})
    runtime.version = "apptainer version 1.3.4"
    env = runtime.environment()
    assert env["APPTAINERENV_SEED"] == "3" and "SINGULARITYENV_SEED" not in env
    assert env["HOST_ONLY"] == "1"  # --cleanenv, not us, keeps it out of the container
    runtime.version = "singularity-ce version 4.1.0"
    env = runtime.environment()
    assert env["SINGULARITYENV_SEED"] == "3" and "APPTAINERENV_SEED" not in env


def test_missing_binary_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeUnavailable, match=r"neither apptainer nor singularity is on PATH; "
                                                 r"install Apptainer .*runtime='bwrap' "
                                                 r"\(apt-get install bubblewrap squashfs-tools\)"):
        ApptainerRuntime(tmp_path / "x.sif").prepare()
    with pytest.raises(RuntimeUnavailable, match=r"container binary 'apptainer-9' was not found"):
        find_apptainer("apptainer-9")


@pytest.fixture
def fake_binary(tmp_path, monkeypatch) -> Path:
    """A stand-in `apptainer` that only answers --version (named so: it is not the real one)."""
    binary = tmp_path / "bin" / "apptainer"
    binary.parent.mkdir()
    binary.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "apptainer version '
                      '1.3.4-fake"; exit 0; fi\nexit 99\n')
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    return binary


def test_prepare_with_fake_apptainer_binary_finds_version_and_checks_image(fake_binary,
                                                                          tmp_path):
    image = tmp_path / "not-a.sif"
    image.write_bytes(b"garbage" * 100)
    runtime = ApptainerRuntime(image)
    with pytest.raises(CorruptImage, match=r"not-a\.sif is not a SIF image: bad magic"):
        runtime.prepare()
    assert runtime.binary == shutil.which("apptainer") == str(fake_binary)
    assert runtime.version == "apptainer version 1.3.4-fake"


def test_prepare_with_fake_apptainer_binary_checks_bind_sources(fake_binary, tmp_path):
    need_tools("mksquashfs")
    (tmp_path / "root").mkdir()
    squashfs = tmp_path / "fs.squashfs"
    subprocess.run(["mksquashfs", str(tmp_path / "root"), str(squashfs), "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    write_sif(tmp_path / "ok.sif", deffile=None, labels=None, squashfs_path=squashfs)
    runtime = ApptainerRuntime(tmp_path / "ok.sif", binds=[f"{tmp_path}/absent:/mnt"])
    with pytest.raises(BadConfig, match=r"bind source .*absent does not exist"):
        runtime.prepare()
